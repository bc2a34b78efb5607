# Freeze sweeps end to end: the client library against the real server binary.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune_client)
  freezetune_test(sweep_e2e_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/sweep_e2e_test.cc
    DEPS freezetune_client freezetune_cli nlohmann_json::nlohmann_json
    LABELS integration TIMEOUT 300)
  target_compile_definitions(sweep_e2e_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(sweep_e2e_test freezetune-server freezetune-model)
endif()
