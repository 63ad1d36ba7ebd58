# kiln run and hostile input lines (helper "run_lines"): NUL bytes, invalid UTF-8, non-standard JSON,
# \u0000, over-long lines, a question filling --max-length and a 2 x 60 kB pair; one output line
# per non-blank input line, always valid UTF-8 strict JSON.
add_test(NAME pipelines.run_lines
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/run_lines.py --kiln $<TARGET_FILE:kiln_cli>
                 --fixtures ${CMAKE_CURRENT_LIST_DIR}/fixtures)
set_tests_properties(pipelines.run_lines PROPERTIES TIMEOUT 300)
