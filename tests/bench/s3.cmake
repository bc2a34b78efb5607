# S3 read throughput vs a local file (tests/bench/S3.md): a plain program,
# not a CTest. Run by hand: build/tests/freezetune_s3_read_bench [MB] [rounds].
if(TARGET freezetune_data_io AND TARGET s3_test_server)
  add_executable(freezetune_s3_read_bench ${PROJECT_SOURCE_DIR}/tests/bench/s3_read_bench.cc)
  target_link_libraries(freezetune_s3_read_bench PRIVATE freezetune_data_io)
  target_include_directories(freezetune_s3_read_bench PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(freezetune_s3_read_bench PRIVATE
    FREEZETUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}" FREEZETUNE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  add_dependencies(freezetune_s3_read_bench s3_test_server)
  freezetune_warnings(freezetune_s3_read_bench)
endif()
