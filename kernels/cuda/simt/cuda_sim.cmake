# The CUDA backend without a GPU: kernels/cuda/*.cu compiled by the host C++ compiler against the
# SIMT interpreter (kernels/cuda/simt), which stands in for the device, the CUDA runtime and
# cuBLASLt. It defines the same symbols as the nvcc-compiled backend, so it lives in its own
# engine, kiln_core_sim: the CPU objects of kiln_obj (without backends.c, build_info.c,
# runtime/comm_nccl.c (here without NCCL) and autograd/trainer_device.c, which
# are compiled again here with KILN_HAVE_CUDA) plus these. kiln-sim is the CLI on it; the tests in
# tests/gpu are built on it too (tests/gpu/gpusim.cmake). Included from the top CMakeLists.txt.
option(KILN_CUDA_SIM "Build the CUDA backend for the SIMT interpreter (kiln-sim, gpusim.* tests)" ON)
if(KILN_CUDA_SIM)
  # the interpreter itself: device language, scheduler and checks, CUDA runtime, cuBLASLt
  file(GLOB KILN_SIMT_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/simt/*.cpp)
  add_library(kiln_simt OBJECT ${KILN_SIMT_SRC})
  target_include_directories(kiln_simt PUBLIC ${CMAKE_SOURCE_DIR}/kernels/cuda/simt/include ${CMAKE_SOURCE_DIR}/kernels/cuda ${CMAKE_SOURCE_DIR})
  target_compile_definitions(kiln_simt PUBLIC KILN_CUDA_SIM=1)
  target_compile_features(kiln_simt PUBLIC cxx_std_17)

  # each .cu is compiled as C++ through a one-line wrapper: a source file has one language per
  # directory, and the nvcc build compiles the same files as CUDA
  set(KILN_SIM_WRAPPERS)
  foreach(f ${KILN_CUDA_SRC})
    get_filename_component(n ${f} NAME_WE)
    set(w ${CMAKE_BINARY_DIR}/simt_src/${n}.cpp)
    set(_content "// generated: ${f} compiled for the SIMT interpreter\n#include \"${f}\"\n")
    if(EXISTS ${w})
      file(READ ${w} _old)
    else()
      set(_old "")
    endif()
    if(NOT _old STREQUAL _content)
      file(WRITE ${w} "${_content}")
    endif()
    list(APPEND KILN_SIM_WRAPPERS ${w})
  endforeach()
  add_library(kiln_sim_obj OBJECT ${KILN_SIM_WRAPPERS} ${CMAKE_SOURCE_DIR}/runtime/backends.c ${CMAKE_SOURCE_DIR}/runtime/build_info.c
              ${CMAKE_SOURCE_DIR}/autograd/trainer_device.c ${CMAKE_SOURCE_DIR}/runtime/comm_nccl.c)
  target_include_directories(kiln_sim_obj PRIVATE ${CMAKE_SOURCE_DIR}/runtime ${CMAKE_SOURCE_DIR} ${KILN_GEN})
  target_compile_definitions(kiln_sim_obj PRIVATE _GNU_SOURCE KILN_VERSION="${PROJECT_VERSION}" KILN_HAVE_PCRE2=1 KILN_HAVE_CUDA=1)
  target_link_libraries(kiln_sim_obj PUBLIC kiln_simt)
  target_compile_options(kiln_sim_obj PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-unused-function -Wno-unused-variable>)
  add_dependencies(kiln_sim_obj kiln_onnxpb)

  add_library(kiln_core_sim INTERFACE)
  target_sources(kiln_core_sim INTERFACE
    "$<FILTER:$<TARGET_OBJECTS:kiln_obj>,EXCLUDE,(/runtime/backends\\.c|/runtime/build_info\\.c|/autograd/trainer_device\\.c|/runtime/comm_nccl\\.c|\\.cu)\\.o$>"
    $<TARGET_OBJECTS:kiln_sim_obj> $<TARGET_OBJECTS:kiln_simt> $<TARGET_OBJECTS:kiln_onnxpb>)
  target_include_directories(kiln_core_sim INTERFACE ${CMAKE_SOURCE_DIR}/runtime ${CMAKE_SOURCE_DIR} ${KILN_GEN}
                             ${CMAKE_SOURCE_DIR}/kernels/cuda/simt/include)
  target_compile_definitions(kiln_core_sim INTERFACE _GNU_SOURCE KILN_HAVE_CUDA=1 KILN_CUDA_SIM=1)
  target_link_libraries(kiln_core_sim INTERFACE PkgConfig::PROTOBUFC PkgConfig::PCRE2 PkgConfig::IMAGES Threads::Threads m
                        ${CMAKE_DL_LIBS} stdc++)
  if(MPI_C_FOUND)  # kiln_obj's runtime/comm.c calls MPI
    target_link_libraries(kiln_core_sim INTERFACE MPI::MPI_C)
    # build_info.c, compiled again here, then says so (kiln-sim --version: "mpi")
    target_compile_definitions(kiln_sim_obj PRIVATE KILN_HAVE_MPI=1)
  endif()

  add_executable(kiln_cli_sim ${KILN_CLI_SRC})
  set_target_properties(kiln_cli_sim PROPERTIES OUTPUT_NAME kiln-sim)
  target_link_libraries(kiln_cli_sim PRIVATE kiln_core_sim)
  if(TARGET kiln_pipelines)
    target_link_libraries(kiln_cli_sim PRIVATE kiln_pipelines)
    target_compile_definitions(kiln_cli_sim PRIVATE KILN_HAVE_PIPELINES=1)
  endif()
endif()
