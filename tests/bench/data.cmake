# Data-layer measurement: padding saved by length bucketing on SST-2 train,
# plus parse and encode times, cold and through the tokenization cache
# (server/train/encode_cache.h, hence freezetune_train). A plain program, not
# a CTest: run it by hand, e.g. build-x/tests/freezetune_batching_bench
# [path/to/train.tsv].
if(TARGET freezetune_data AND TARGET freezetune_train)
  add_executable(freezetune_batching_bench ${PROJECT_SOURCE_DIR}/tests/bench/batching_bench.cc)
  target_link_libraries(freezetune_batching_bench PRIVATE freezetune_data freezetune_train)
  target_compile_definitions(freezetune_batching_bench PRIVATE
    FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  freezetune_warnings(freezetune_batching_bench)
endif()
