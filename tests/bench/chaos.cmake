# kill -9 chaos run (tests/bench/chaos_bench.cc): the real server killed 10
# times during submits, output writes and SubmitSweep; exits non-zero when an
# acknowledged job or sweep is lost or duplicated. Long (minutes): `make
# bench` runs it, not the suite. By hand:
#   build/tests/freezetune_chaos_bench build/server/freezetune-server \
#     build/server/model/freezetune-model [cycles] [jobs] [seed]
if(TARGET freezetune-server AND TARGET freezetune-model)
  add_executable(freezetune_chaos_bench ${PROJECT_SOURCE_DIR}/tests/bench/chaos_bench.cc)
  target_link_libraries(freezetune_chaos_bench PRIVATE freezetune_grpc gRPC::grpc++ absl::strings)
  target_include_directories(freezetune_chaos_bench PRIVATE ${PROJECT_SOURCE_DIR})
  # tests/integration/server_process.h finds the fixture vocab through it.
  target_compile_definitions(freezetune_chaos_bench PRIVATE FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  freezetune_warnings(freezetune_chaos_bench)
  add_dependencies(freezetune_chaos_bench freezetune-server freezetune-model)
  if(TARGET benchmarks)
    add_dependencies(benchmarks freezetune_chaos_bench)
  endif()
endif()
