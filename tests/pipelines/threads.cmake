# One kn_pipeline shared by several threads gives the single-threaded results bit for bit.
add_executable(test_pl_threads ${CMAKE_CURRENT_SOURCE_DIR}/pipelines/test_pl_threads.c)
target_link_libraries(test_pl_threads PRIVATE kiln_pipelines kiln_core)
add_test(NAME pipelines.threads COMMAND test_pl_threads ${CMAKE_CURRENT_SOURCE_DIR}/pipelines/fixtures)
set_tests_properties(pipelines.threads PROPERTIES TIMEOUT 300)
