# GPU tests on the SIMT interpreter (kernels/cuda/simt/cuda_sim.cmake): the interpreter's own tests, the
# kernel harness and the zoo sessions built on kiln_core_sim, and the node conformance suite
# through kiln-sim --device cuda against the CPU. Included from tests/CMakeLists.txt when
# KILN_CUDA_SIM is on; these run (never skip) on machines without a GPU.

# the interpreter itself: every primitive against known answers, every checker on a broken kernel
add_executable(test_simt ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_simt.cpp)
target_link_libraries(test_simt PRIVATE kiln_simt stdc++)
target_sources(test_simt PRIVATE $<TARGET_OBJECTS:kiln_simt>)
add_test(NAME gpusim.interpreter COMMAND test_simt)
set_tests_properties(gpusim.interpreter PROPERTIES TIMEOUT 300)

# every CUDA kernel against the CPU reference (tests/gpu/test_backend_ops.c), racecheck on
add_executable(test_backend_ops_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_backend_ops.c)
target_link_libraries(test_backend_ops_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.backend_ops COMMAND test_backend_ops_sim)
set_tests_properties(gpusim.backend_ops PROPERTIES TIMEOUT 900 ENVIRONMENT "KILN_SIM_RACECHECK=1")

# whole zoo models: a device=cuda session against a device=cpu one (rtol 1e-3, atol 1e-4)
add_executable(test_session_cuda_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_session_cuda.c)
target_link_libraries(test_session_cuda_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.session COMMAND test_session_cuda_sim ${CMAKE_SOURCE_DIR}/../shared/zoo)
set_tests_properties(gpusim.session PROPERTIES TIMEOUT 900 ENVIRONMENT "KILN_SIM_RACECHECK=1")

# the ONNX node suite through kiln-sim --device cuda: every case that passes on the CPU must pass
# on cuda (the CUDA kernels and the placement; ops without a CUDA kernel fall back to the CPU)
add_test(NAME gpusim.conformance_node
         COMMAND ${CMAKE_COMMAND} -DKILN=$<TARGET_FILE:kiln_cli_sim> -DDIR=${CMAKE_BINARY_DIR}/conformance/node
                 -DOUT=${CMAKE_BINARY_DIR}/gpusim-conformance-node -P ${CMAKE_CURRENT_SOURCE_DIR}/gpu/gpusim_conformance.cmake)
set_tests_properties(gpusim.conformance_node PROPERTIES FIXTURES_REQUIRED conformance_data TIMEOUT 2400 ENVIRONMENT "KILN_SIM_RACECHECK=1")

# models fused by ONNX Runtime's transformer optimizer through kiln-sim --device cuda (their
# EmbedLayerNormalization on the CUDA kernel) against ONNX Runtime; the eager-attention exports only
add_test(NAME gpusim.ort_optimizer
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/ort_optimizer_parity.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --device cuda -k _eager_)
set_tests_properties(gpusim.ort_optimizer PROPERTIES TIMEOUT 900)

# fusion chosen per backend: no fused op of a zoo model falls back to the CPU in a cuda session
add_test(NAME gpusim.no_fused_fallback
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/no_fused_fallback.sh $<TARGET_FILE:kiln_cli_sim>
                 ${CMAKE_SOURCE_DIR}/../shared/zoo)
set_tests_properties(gpusim.no_fused_fallback PROPERTIES TIMEOUT 600)

# the pipelines' GPU path: every transformers-parity fixture through kiln-sim run --device cuda
add_test(NAME gpusim.pipelines
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/pipelines/check_parity.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --extra=--device --extra=cuda --timeout 600)
set_tests_properties(gpusim.pipelines PROPERTIES TIMEOUT 1800)

# training graphs (autograd's backward) through a device=cuda session against the CPU: every gradient
# of the train.parity_mlp MLP and of a one-layer encoder, and no node of them left to the CPU
add_executable(test_train_cuda_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_train_cuda.c)
target_link_libraries(test_train_cuda_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.train COMMAND test_train_cuda_sim)
set_tests_properties(gpusim.train PROPERTIES TIMEOUT 600 ENVIRONMENT "KILN_SIM_RACECHECK=1")

# the device optimiser and mixed-precision helpers (kernels/cuda/kn_train_cuda.h) against autograd/optim.c
# bit for bit, the unscale pass, GradScaler's loss scale, weight copies and a whole mixed-precision loop
add_executable(test_optim_cuda_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_optim_cuda.c)
target_link_libraries(test_optim_cuda_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.train_optim COMMAND test_optim_cuda_sim)
set_tests_properties(gpusim.train_optim PROPERTIES TIMEOUT 600 ENVIRONMENT "KILN_SIM_RACECHECK=1")

# the trainer with device=cuda (autograd/trainer_device.c) against the CPU trainer step by step: the MLP
# of train.parity_mlp in float32 (losses, weights, a device checkpoint resumed on the CPU) and in
# float16/bfloat16 mixed precision (loss curve against float32, an overflow step skipped, the scale halved)
add_executable(test_train_device_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_train_device.c)
target_link_libraries(test_train_device_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.train_device COMMAND test_train_device_sim)
set_tests_properties(gpusim.train_device PROPERTIES TIMEOUT 600 ENVIRONMENT "KILN_SIM_RACECHECK=1")
# kiln-sim train --device cuda --precision fp32|fp16|bf16 against --device cpu (tests/gpu/train_device_cli.py)
add_test(NAME gpusim.train_device_cli
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gpu/train_device_cli.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --work ${CMAKE_BINARY_DIR}/gpusim-train-device-cli)
set_tests_properties(gpusim.train_device_cli PROPERTIES TIMEOUT 900)
# data-parallel kiln-sim train --device cuda (gradients staged through the host collectives: the interpreter
# has no NCCL) under mpirun -np 2 and torchrun-style over TCP against one process (tests/gpu/train_device_dp.py)
add_test(NAME gpusim.train_device_dp
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gpu/train_device_dp.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --work ${CMAKE_BINARY_DIR}/gpusim-train-device-dp)
set_tests_properties(gpusim.train_device_dp PROPERTIES TIMEOUT 900 RESOURCE_LOCK train_dp ENVIRONMENT "KILN_SIM_STREAMCHECK=1")
# per-op autocast (options.autocast) against float32, and a mixed-precision run resumed from a
# checkpoint holding the dynamic loss scale against the uninterrupted run, bit for bit
add_test(NAME gpusim.train_device_amp COMMAND test_train_device_sim amp)
set_tests_properties(gpusim.train_device_amp PROPERTIES TIMEOUT 600 ENVIRONMENT "KILN_SIM_RACECHECK=1")

# kn_session_options.precision fp16/bf16/tf32 on every zoo model against the CPU's float32
# (relative L2 < 1e-2 each, issue 14), and on a real GPU build as gpu.precision
add_executable(test_precision_cuda_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_precision_cuda.c)
target_link_libraries(test_precision_cuda_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.precision COMMAND test_precision_cuda_sim ${CMAKE_SOURCE_DIR}/../shared/zoo)
set_tests_properties(gpusim.precision PROPERTIES TIMEOUT 1800)

# CUDA graphs: the interpreter's stream capture rules, and sessions recording a plan's run once
# and replaying it (results against the CPU with inputs changed every run, replay counts)
add_executable(test_graph_cuda_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_graph_cuda.c)
target_link_libraries(test_graph_cuda_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.graphs COMMAND test_graph_cuda_sim ${CMAKE_SOURCE_DIR}/../shared/zoo)
set_tests_properties(gpusim.graphs PROPERTIES TIMEOUT 900 ENVIRONMENT "KILN_SIM_RACECHECK=1")
# train.parity_cnn's CNN (Conv, BatchNormalization training mode, pools, a grouped Conv) through a device=cuda
# session against the CPU: every gradient within 1e-4 of the largest (float32), no node left to the CPU
add_test(NAME gpusim.train_cnn COMMAND test_train_cuda_sim cnn)
set_tests_properties(gpusim.train_cnn PROPERTIES TIMEOUT 600 ENVIRONMENT "KILN_SIM_RACECHECK=1")
# the same CNN on the device trainer (autograd/trainer_device.c) against the CPU trainer: 8 SGD-momentum steps,
# losses within 1e-5, weights within 1e-4; a fallback notice on the session log fails it
add_test(NAME gpusim.train_device_cnn COMMAND test_train_device_sim cnn)
set_tests_properties(gpusim.train_device_cnn PROPERTIES TIMEOUT 600 ENVIRONMENT "KILN_SIM_RACECHECK=1"
                     FAIL_REGULAR_EXPRESSION "runs on the CPU")

# the fused attention kernel alone (kernels/cuda/attention.cu: KnSdpa, com.microsoft Attention,
# MultiHeadAttention, GroupQueryAttention and RotaryEmbedding), racecheck on: the same cases as
# gpusim.backend_ops, in seconds
add_test(NAME gpusim.attention COMMAND test_backend_ops_sim KnSdpa,Attention,MultiHeadAttention,GroupQueryAttention,RotaryEmbedding)
set_tests_properties(gpusim.attention PROPERTIES TIMEOUT 300 ENVIRONMENT "KILN_SIM_RACECHECK=1")
# the text-generation ops against ONNX Runtime through kiln-sim --device cuda: GroupQueryAttention
# and RotaryEmbedding on the CUDA kernels (tests/genops_parity.py)
add_test(NAME gpusim.genops_parity
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/genops_parity.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --device cuda)
set_tests_properties(gpusim.genops_parity PROPERTIES TIMEOUT 600)

# kiln info --device cuda --json: the zoo lists only the conv/pool nodes left to other work, and
# generated models show each fallback reason on the node that causes it
add_test(NAME gpusim.info_fallbacks
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gpu/info_fallbacks.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --zoo ${CMAKE_SOURCE_DIR}/../shared/zoo)
set_tests_properties(gpusim.info_fallbacks PROPERTIES TIMEOUT 300)

# cucontrib: the contrib and text-generation ops against ONNX Runtime through kiln-sim --device cuda,
# each case failing if one of the ops with a CUDA kernel ran on the CPU instead
add_test(NAME gpusim.contrib_parity
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/contrib_parity.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --device cuda --require-device Gelu,FastGelu,BiasGelu,GemmFastGelu,SkipLayerNormalization)
set_tests_properties(gpusim.contrib_parity PROPERTIES TIMEOUT 900)
add_test(NAME gpusim.genops_on_device
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/genops_parity.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --device cuda
                 --require-device SimplifiedLayerNormalization,SkipSimplifiedLayerNormalization,MatMulNBits,GatherBlockQuantized)
set_tests_properties(gpusim.genops_on_device PROPERTIES TIMEOUT 900)
# the GenAI-layout decoder (SimplifiedLayerNormalization, GroupQueryAttention) generating on cuda: the
# same greedy tokens as ONNX Runtime and as kiln on the CPU
if(TARGET kiln_pipelines)
  add_test(NAME gpusim.textgen_genai
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/textgen_parity.py --case genai
                   --kiln $<TARGET_FILE:kiln_cli_sim> --extra=--device --extra=cuda
                   --keep ${CMAKE_BINARY_DIR}/gpusim-textgen-genai)
  set_tests_properties(gpusim.textgen_genai PROPERTIES TIMEOUT 600)
endif()
# GemmFastGelu and Gemm's bias row when cuBLASLt offers no algorithm with an epilogue: the plain GEMM
# and the backend's own bias / GELU, against the CPU
add_test(NAME gpusim.backend_ops_no_epilogue COMMAND test_backend_ops_sim Gemm,GemmFastGelu)
set_tests_properties(gpusim.backend_ops_no_epilogue PROPERTIES TIMEOUT 600
                     ENVIRONMENT "KILN_SIM_RACECHECK=1;KILN_SIM_LT_NO_EPILOGUE=1")
# stream order on the interpreter (KILN_SIM_STREAMCHECK=1: a cross-stream read or write without an
# event wait or a synchronisation fails) and the device trainer's communication stream
# (kn_cuda_side_*); gpusim.train_device_dp runs under the same check
add_executable(test_stream_order_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_stream_order.c)
target_link_libraries(test_stream_order_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.stream_order COMMAND test_stream_order_sim)
set_tests_properties(gpusim.stream_order PROPERTIES TIMEOUT 120)
# the Optimum layout (GPT-2 with position_ids, a Llama export) generating on cuda with its cache and
# presents in device memory: greedy ids == kiln on the CPU (batch 1 and 4), decode steps replayed;
# devgreedy: a GenAI fixture too, the greedy choice on the device (a decode step copies B * 4 bytes
# device to host, + 64 at most, counted by the interpreter), the repetition penalty there == CPU,
# seeded top-k sampling from the device's candidates == CPU
if(TARGET kiln_pipelines)
  add_test(NAME gpusim.textgen_device
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/textgen_parity.py --case device
                   --kiln $<TARGET_FILE:kiln_cli_sim> --extra=--device --extra=cuda
                   --gen ${CMAKE_SOURCE_DIR}/tools/gen --keep ${CMAKE_BINARY_DIR}/gpusim-textgen-device)
  set_tests_properties(gpusim.textgen_device PROPERTIES TIMEOUT 600)
endif()

# cucover: issue 14 on the model families (tiny random-weight transformers, hand-written vision nets,
# ORT-optimizer fused and int8 forms): kiln info --device cuda lists no fallback and cuda matches the
# CPU. Generated models are cached under the build dir.
add_test(NAME gpusim.family_coverage
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gpu/family_coverage.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --cache ${CMAKE_BINARY_DIR}/family_models)
set_tests_properties(gpusim.family_coverage PROPERTIES TIMEOUT 900)
# cucover: --seq-bucket N of kiln bench/exec/run: a sweep of lengths builds one plan per bucket
add_test(NAME gpusim.seq_bucket_cli
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gpu/seq_bucket_cli.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --device cuda)
set_tests_properties(gpusim.seq_bucket_cli PROPERTIES TIMEOUT 300)
# hostsync: no host synchronisation inside a run. The interpreter counts the host's waits for the device
# (kn_sim_host_syncs); every zoo model (plain, recorded and replayed runs, and with KILN_CUDA_GRAPHS=0)
# and a bidirectional LSTM with ragged sequence_lens make exactly one per run, results == the CPU; racecheck
# and the stream order check on (a missing wait would show there)
add_executable(test_host_sync_sim ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_host_sync.c)
target_link_libraries(test_host_sync_sim PRIVATE kiln_core_sim)
add_test(NAME gpusim.host_sync COMMAND test_host_sync_sim ${CMAKE_SOURCE_DIR}/../shared/zoo)
set_tests_properties(gpusim.host_sync PROPERTIES TIMEOUT 900 ENVIRONMENT "KILN_SIM_RACECHECK=1;KILN_SIM_STREAMCHECK=1")
# fusedgemm: com.microsoft FusedGemm on cuda: the kernel against the CPU (also with no epilogue
# offered by cuBLASLt), the op against ONNX Runtime, and the Gemm/MatMul + activation fusion of an
# MLP taking the RELU_BIAS epilogue
add_test(NAME gpusim.fused_gemm COMMAND test_backend_ops_sim FusedGemm)
set_tests_properties(gpusim.fused_gemm PROPERTIES TIMEOUT 600 ENVIRONMENT "KILN_SIM_RACECHECK=1")
add_test(NAME gpusim.fused_gemm_no_epilogue COMMAND test_backend_ops_sim FusedGemm)
set_tests_properties(gpusim.fused_gemm_no_epilogue PROPERTIES TIMEOUT 600
                     ENVIRONMENT "KILN_SIM_RACECHECK=1;KILN_SIM_LT_NO_EPILOGUE=1")
add_test(NAME gpusim.fused_gemm_parity
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/contrib_parity.py --kiln $<TARGET_FILE:kiln_cli_sim>
                 --device cuda --require-device FusedGemm -k fusedgemm)
set_tests_properties(gpusim.fused_gemm_parity PROPERTIES TIMEOUT 600)
add_test(NAME gpusim.fused_gemm_mlp
         COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/gpu/fused_gemm_mlp.py $<TARGET_FILE:kiln_cli_sim>)
set_tests_properties(gpusim.fused_gemm_mlp PROPERTIES TIMEOUT 600)
# devgreedy: text generation's greedy argmax on the device (kn_backend.greedy) against the CPU
# generator's scan: vocabularies up to 151936, ties, NaN/-inf rows, the repetition penalty; and
# kn_backend.topk (top-k sampling's candidates) against the CPU sampler's sort order
add_test(NAME gpusim.backend_ops_greedy COMMAND test_backend_ops_sim greedy)
set_tests_properties(gpusim.backend_ops_greedy PROPERTIES TIMEOUT 600 ENVIRONMENT "KILN_SIM_RACECHECK=1")
