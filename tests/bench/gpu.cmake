# The GPU benchmark's freezetune side (tests/bench/gpu_bench.cc; see
# tests/bench/GPU.md), run by scripts/gpu/check.sh on CUDA. gpu_bench_smoke
# runs it on the CPU with a tiny model so that the program itself is tested
# by `make test` (a few seconds).
if(TARGET freezetune_train)
  add_executable(gpu_bench ${PROJECT_SOURCE_DIR}/tests/bench/gpu_bench.cc)
  target_link_libraries(gpu_bench PRIVATE freezetune_train protobuf::libprotobuf)
  freezetune_warnings(gpu_bench)
  if(TARGET benchmarks)
    add_dependencies(benchmarks gpu_bench)
  endif()
  add_test(NAME gpu_bench_smoke
    COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/bench/gpu_bench_smoke.py
            $<TARGET_FILE:gpu_bench> ${PROJECT_BINARY_DIR}/gpu_bench_smoke.json)
  set_tests_properties(gpu_bench_smoke PROPERTIES LABELS "bench" TIMEOUT 300)
endif()
