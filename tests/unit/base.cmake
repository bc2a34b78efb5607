# Unit tests of server/base (torch-free): CPU features, BLAS core selection,
# the start-up re-exec that applies it, the allocator's release of a job's
# memory, structured log lines.
if(TARGET freezetune_base)
  freezetune_test(base_log_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/base_log_test.cc
    DEPS freezetune_base nlohmann_json::nlohmann_json
    LABELS base TIMEOUT 60)
  freezetune_test(base_blas_core_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/base_blas_core_test.cc
    DEPS freezetune_base
    LABELS base TIMEOUT 60)

  add_executable(process_tuning_probe ${PROJECT_SOURCE_DIR}/tests/unit/process_tuning_probe.cc)
  target_link_libraries(process_tuning_probe PRIVATE freezetune_base)
  freezetune_warnings(process_tuning_probe)
  freezetune_test(base_process_tuning_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/base_process_tuning_test.cc
    DEPS freezetune_base absl::strings
    LABELS base TIMEOUT 120)
  add_dependencies(base_process_tuning_test process_tuning_probe)
  target_compile_definitions(base_process_tuning_test PRIVATE
    PROCESS_TUNING_PROBE="$<TARGET_FILE:process_tuning_probe>")
endif()
