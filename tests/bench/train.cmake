# Training-loop measurement per freeze recipe (frozen-prefix NoGradGuard and
# output cache). A plain program, not a CTest: run it by hand, e.g.
# build-x/tests/freezetune_train_bench [epochs].
if(TARGET freezetune_train AND TARGET freezetune_data AND TARGET freezetune_model)
  add_executable(freezetune_train_bench ${PROJECT_SOURCE_DIR}/tests/bench/train_bench.cc)
  target_link_libraries(freezetune_train_bench PRIVATE freezetune_train freezetune_base protobuf::libprotobuf)
  target_compile_definitions(freezetune_train_bench PRIVATE
    FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  freezetune_warnings(freezetune_train_bench)
endif()
