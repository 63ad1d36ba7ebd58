# tokenClassification and questionAnswering against transformers' pipelines (references recorded
# by gen_tokqa_refs.py next to the tiny model folders in data/; no torch needed here).
add_executable(test_pl_tokqa ${CMAKE_CURRENT_SOURCE_DIR}/pipelines/test_pl_tokqa.c)
target_compile_definitions(test_pl_tokqa PRIVATE _GNU_SOURCE)
target_link_libraries(test_pl_tokqa PRIVATE kiln_pipelines kiln_core)
add_test(NAME pipelines.tokqa COMMAND test_pl_tokqa ${CMAKE_SOURCE_DIR}/tests/pipelines/data)
set_tests_properties(pipelines.tokqa PROPERTIES TIMEOUT 300)
