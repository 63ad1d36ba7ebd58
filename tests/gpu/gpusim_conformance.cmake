# cmake -P script for ctest gpusim.conformance_node: the ONNX node suite through kiln-sim on the
# CPU, then with --device cuda (the CUDA backend on the SIMT interpreter) held to the CPU's
# result: every case that passed on the CPU must pass on cuda (--baseline), and the count with it
# (--floor). A case lost is a CUDA kernel or placement bug, since ops without a CUDA kernel fall
# back to the CPU. Arguments: -DKILN=kiln-sim -DDIR=suite folder -DOUT=folder for the reports.
if(NOT KILN OR NOT DIR OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DKILN=... -DDIR=... -DOUT=... -P gpusim_conformance.cmake")
endif()
file(MAKE_DIRECTORY ${OUT})
execute_process(COMMAND ${KILN} conformance ${DIR} --write-baseline ${OUT}/cpu-passing.txt
                OUTPUT_FILE ${OUT}/cpu.txt ERROR_FILE ${OUT}/cpu.err RESULT_VARIABLE rc_cpu)
file(STRINGS ${OUT}/cpu.txt cpu_last REGEX "^[0-9]+ passed, [0-9]+ failed")
if(NOT cpu_last)
  message(FATAL_ERROR "the CPU run printed no summary (exit ${rc_cpu}); see ${OUT}/cpu.txt")
endif()
string(REGEX MATCH "^[0-9]+" cpu_pass "${cpu_last}")
execute_process(COMMAND ${KILN} conformance ${DIR} --device cuda --baseline ${OUT}/cpu-passing.txt --floor ${cpu_pass}
                OUTPUT_FILE ${OUT}/cuda.txt ERROR_FILE ${OUT}/cuda.err RESULT_VARIABLE rc_cuda)
file(STRINGS ${OUT}/cuda.txt cuda_last REGEX "^[0-9]+ passed, [0-9]+ failed")
file(STRINGS ${OUT}/cuda.txt lost REGEX "^  test_")
message("cpu:  ${cpu_last}")
message("cuda: ${cuda_last}")
if(NOT rc_cuda EQUAL 0)
  string(REPLACE ";" "\n" lost "${lost}")
  message(FATAL_ERROR "cases that pass on the CPU fail with --device cuda (${OUT}/cuda.txt):\n${lost}")
endif()
