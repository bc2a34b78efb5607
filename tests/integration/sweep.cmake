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

# The Python client's sweep methods against the real server.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune_python_stubs
   AND FREEZETUNE_PYTHON)
  add_test(NAME sweep_python_e2e_test
    COMMAND ${FREEZETUNE_PYTHON} ${PROJECT_SOURCE_DIR}/tests/integration/sweep_python_e2e.py
      $<TARGET_FILE:freezetune-server> $<TARGET_FILE:freezetune-model> ${PROJECT_SOURCE_DIR})
  set_tests_properties(sweep_python_e2e_test PROPERTIES
    TIMEOUT 300 LABELS "integration;client"
    ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python:${PROJECT_BINARY_DIR}/python")
endif()
