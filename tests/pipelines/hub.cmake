# kiln download and the Hugging Face cache against a local hub (hub_server.py): cache layout,
# offline use, resumed and stalled transfers, SHA-256 checks, tokens, 404s, one ONNX per download.
add_test(NAME pipelines.hub
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/test_hub.py --kiln $<TARGET_FILE:kiln_cli>
                 --gen ${CMAKE_SOURCE_DIR}/tools/gen/gen_bert.py)
set_tests_properties(pipelines.hub PROPERTIES TIMEOUT 600)
