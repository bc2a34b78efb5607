# Tokenizer throughput benchmark (Google Benchmark). Not a CTest: run it by
# hand, e.g. build-x/tests/freezetune_tokenizer_bench.
if(TARGET freezetune_tokenizer)
  find_package(benchmark CONFIG QUIET)
  if(TARGET benchmark::benchmark)
    add_executable(freezetune_tokenizer_bench ${PROJECT_SOURCE_DIR}/tests/bench/tokenizer_bench.cc)
    target_link_libraries(freezetune_tokenizer_bench PRIVATE
      freezetune_tokenizer benchmark::benchmark benchmark::benchmark_main)
    target_compile_definitions(freezetune_tokenizer_bench PRIVATE
      FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
    freezetune_warnings(freezetune_tokenizer_bench)
  endif()
endif()
