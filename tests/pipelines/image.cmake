# Image pipelines: decoding, preprocessing, image classification and image feature extraction
# against references from transformers (tests/pipelines/gen_image_refs.py wrote data/).
add_executable(test_pl_image ${CMAKE_CURRENT_SOURCE_DIR}/pipelines/test_pl_image.c)
target_compile_definitions(test_pl_image PRIVATE _GNU_SOURCE)
target_link_libraries(test_pl_image PRIVATE kiln_pipelines kiln_core)
add_test(NAME pipelines.image COMMAND test_pl_image ${CMAKE_CURRENT_SOURCE_DIR}/pipelines/data)
set_tests_properties(pipelines.image PROPERTIES TIMEOUT 600)
