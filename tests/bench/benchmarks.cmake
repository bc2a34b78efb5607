# Benchmarks of the training engine against plain PyTorch, real-data
# acceptance runs, and the `benchmarks` target that builds every benchmark
# (what `make bench` builds before running tests/bench/run.sh). Plain
# programs, not CTests: the suite must stay fast.
if(TARGET freezetune_train AND TARGET freezetune_data AND TARGET freezetune_model)
  # C++ side of tests/bench/run.sh's train-vs-PyTorch comparison (step time,
  # frozen-prefix cache, memory).
  add_executable(freezetune_train_vs_pytorch ${PROJECT_SOURCE_DIR}/tests/bench/train_vs_pytorch.cc)
  target_link_libraries(freezetune_train_vs_pytorch PRIVATE freezetune_train freezetune_base protobuf::libprotobuf)
  freezetune_warnings(freezetune_train_vs_pytorch)

  # Runs a FineTuneJob (JSON) through RunFineTune; see tests/bench/jobs/.
  add_executable(freezetune_acceptance ${PROJECT_SOURCE_DIR}/tests/bench/acceptance.cc)
  target_link_libraries(freezetune_acceptance PRIVATE freezetune_train freezetune_base protobuf::libprotobuf)
  target_compile_definitions(freezetune_acceptance PRIVATE
    FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  freezetune_warnings(freezetune_acceptance)
endif()

# `benchmarks` depends on every benchmark executable that this configuration
# defines (and freezetune-model, which run.sh uses to create the model).
# Deferred to the end of this directory so that fragments included after this
# one (data.cmake, tokenizer.cmake, train.cmake, ...) have defined theirs.
add_custom_target(benchmarks)
function(freezetune_benchmarks_deps)
  foreach(_t freezetune_batching_bench freezetune_tokenizer_bench freezetune_train_bench
             freezetune_train_vs_pytorch freezetune_acceptance freezetune_s3_read_bench
             freezetune_store_bench
             freezetune-model)
    if(TARGET ${_t})
      add_dependencies(benchmarks ${_t})
    endif()
  endforeach()
endfunction()
cmake_language(DEFER CALL freezetune_benchmarks_deps)
