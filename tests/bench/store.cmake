# Store latency, SQLite vs PostgreSQL side by side (tests/bench/STORE.md): a
# plain program, not a CTest. Run: build/tests/freezetune_store_bench [jobs] [events].
if(TARGET freezetune_store AND TARGET freezetune_test_postgres)
  add_executable(freezetune_store_bench ${PROJECT_SOURCE_DIR}/tests/bench/store_bench.cc)
  target_link_libraries(freezetune_store_bench PRIVATE freezetune_store freezetune_test_postgres)
  target_include_directories(freezetune_store_bench PRIVATE ${PROJECT_SOURCE_DIR})
  freezetune_warnings(freezetune_store_bench)
endif()
