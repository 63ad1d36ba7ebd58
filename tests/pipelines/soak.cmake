# Memory soak (helper "soak"): a long stream through `kiln run` keeps a flat peak RSS (ten times the
# lines, within a few MB of the first pass), and every input line gets one output line.
add_test(NAME pipelines.soak
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/soak.py --kiln $<TARGET_FILE:kiln_cli>
                 --model ${CMAKE_CURRENT_LIST_DIR}/fixtures/feature_st_mean_norm/model --lines 2000 --factor 10)
set_tests_properties(pipelines.soak PROPERTIES TIMEOUT 300)
