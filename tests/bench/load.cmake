# Streaming load test (tests/bench/load_bench.cc): the real server on
# loopback, N watchers on one job and M concurrent jobs; prints latency and
# server memory, exits non-zero when an event is lost or out of order.
# A plain program (run by hand, numbers in tests/bench/STREAMING.md):
#   build-x/tests/freezetune_load_bench build-x/server/freezetune-server \
#     build-x/server/model/freezetune-model 1000 200
# plus a small bounded CTest (100 watchers, 20 jobs).
if(TARGET freezetune-server AND TARGET freezetune-model)
  add_executable(freezetune_load_bench ${PROJECT_SOURCE_DIR}/tests/bench/load_bench.cc)
  target_link_libraries(freezetune_load_bench PRIVATE freezetune_grpc gRPC::grpc++
    absl::synchronization absl::time)
  target_include_directories(freezetune_load_bench PRIVATE ${PROJECT_SOURCE_DIR})
  # tests/integration/server_process.h finds the fixture vocab through it.
  target_compile_definitions(freezetune_load_bench PRIVATE FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  freezetune_warnings(freezetune_load_bench)
  add_dependencies(freezetune_load_bench freezetune-server freezetune-model)
  if(TARGET benchmarks)
    add_dependencies(benchmarks freezetune_load_bench)
  endif()
  add_test(NAME load_smoke_test
    COMMAND freezetune_load_bench $<TARGET_FILE:freezetune-server>
            $<TARGET_FILE:freezetune-model> 100 20 60)
  set_tests_properties(load_smoke_test PROPERTIES LABELS "integration;load" TIMEOUT 90)
endif()

# Replicas on one PostgreSQL (tests/bench/replicas_bench.cc): 1 vs 3
# replicas, submit throughput, event latency, RSS. Numbers in
# tests/bench/REPLICAS.md.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune_test_postgres)
  add_executable(freezetune_replicas_bench ${PROJECT_SOURCE_DIR}/tests/bench/replicas_bench.cc)
  target_link_libraries(freezetune_replicas_bench PRIVATE freezetune_grpc gRPC::grpc++
    freezetune_test_postgres absl::synchronization absl::time)
  target_include_directories(freezetune_replicas_bench PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(freezetune_replicas_bench PRIVATE FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  freezetune_warnings(freezetune_replicas_bench)
  add_dependencies(freezetune_replicas_bench freezetune-server freezetune-model)
  if(TARGET benchmarks)
    add_dependencies(benchmarks freezetune_replicas_bench)
  endif()
endif()
