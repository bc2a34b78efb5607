# The client library (and the Python client) against the real server binary.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune_client)
  freezetune_test(client_e2e_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/client_e2e_test.cc
    DEPS freezetune_client
    LABELS integration TIMEOUT 300)
  target_compile_definitions(client_e2e_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(client_e2e_test freezetune-server freezetune-model)
endif()
