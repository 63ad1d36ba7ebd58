# textClassification, zeroShotClassification and crossEncoder against transformers' pipelines and
# sentence-transformers' CrossEncoder, on the tiny models of tests/pipelines/data (references
# written by gen_textcls_refs.py; this test needs neither torch nor Python).
add_executable(test_pl_text ${CMAKE_CURRENT_SOURCE_DIR}/pipelines/test_pl_text.c)
target_link_libraries(test_pl_text PRIVATE kiln_pipelines kiln_core)
add_test(NAME pipelines.textcls COMMAND test_pl_text ${CMAKE_CURRENT_SOURCE_DIR}/pipelines/data)
set_tests_properties(pipelines.textcls PROPERTIES TIMEOUT 300)
