# kiln run and the featureExtraction pipeline (helper "cli"): pooling math against ONNX Runtime +
# numpy on a tiny BERT made on the spot, and bad models / bad input lines / Ctrl-C.
add_test(NAME pipelines.feature_pooling
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/pipelines/feature_pooling.py
                 --kiln $<TARGET_FILE:kiln_cli> --gen ${CMAKE_SOURCE_DIR}/tools/gen/gen_bert.py)
set_tests_properties(pipelines.feature_pooling PROPERTIES TIMEOUT 600)
add_test(NAME pipelines.bad_input
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/pipelines/bad_input.py
                 --kiln $<TARGET_FILE:kiln_cli> --gen ${CMAKE_SOURCE_DIR}/tools/gen/gen_bert.py)
set_tests_properties(pipelines.bad_input PROPERTIES TIMEOUT 600)
