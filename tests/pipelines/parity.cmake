# kiln run against the transformers / sentence-transformers references in tests/pipelines/fixtures:
# one test per fixture so a failing task shows by name (check_parity.py, standard library only).
file(GLOB KILN_PL_FIXTURES RELATIVE ${CMAKE_CURRENT_LIST_DIR}/fixtures CONFIGURE_DEPENDS
     ${CMAKE_CURRENT_LIST_DIR}/fixtures/*/args.json)
foreach(f ${KILN_PL_FIXTURES})
  get_filename_component(name ${f} DIRECTORY)
  add_test(NAME pipelines.parity.${name}
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/check_parity.py
                   --kiln $<TARGET_FILE:kiln_cli> ${name})
  set_tests_properties(pipelines.parity.${name} PROPERTIES TIMEOUT 300)
endforeach()

# The issue's acceptance check: the real all-MiniLM-L6-v2 through kiln run featureExtraction against
# SentenceTransformer.encode (skips when sentence-transformers or the checkpoint package is missing).
add_test(NAME pipelines.st_minilm
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/st_minilm_check.py
                 --kiln $<TARGET_FILE:kiln_cli> --gen ${CMAKE_SOURCE_DIR}/tools/gen/gen_bert.py)
set_tests_properties(pipelines.st_minilm PROPERTIES TIMEOUT 900)

# A channels-last ([batch, H, W, C]) copy of the ViT fixture's model gives the same answers.
add_test(NAME pipelines.nhwc
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/nhwc_check.py --kiln $<TARGET_FILE:kiln_cli>)
set_tests_properties(pipelines.nhwc PROPERTIES TIMEOUT 300)
