# The client library (and the Python client) against the real server binary.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune_client)
  freezetune_test(client_e2e_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/client_e2e_test.cc
    DEPS freezetune_client freezetune_grpc gRPC::grpc++
    LABELS integration TIMEOUT 300)
  target_compile_definitions(client_e2e_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(client_e2e_test freezetune-server freezetune-model)
endif()

# The Python SDK as users install it: pip builds the wheel (stubs generated
# from proto/ at build time) into a fresh venv, and the end-to-end test runs
# from that install against the real server (python_package_test.sh).
if(TARGET freezetune-server AND TARGET freezetune-model AND FREEZETUNE_PYTHON)
  add_test(NAME python_client_e2e_test
    COMMAND sh ${PROJECT_SOURCE_DIR}/tests/integration/python_package_test.sh
      ${FREEZETUNE_PYTHON} $<TARGET_FILE:freezetune-server> $<TARGET_FILE:freezetune-model>
      ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/python_package_test ${PROJECT_VERSION})
  set_tests_properties(python_client_e2e_test PROPERTIES
    TIMEOUT 300 LABELS "integration;client")
endif()

# The `freezetune` CLI binary against the real server, on a pseudo-terminal
# where behaviour depends on one (Ctrl-C, lists), and `freezetune report`
# rendered by headless chromium (cli_e2e.py).
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune
   AND TARGET freezetune_python_stubs AND FREEZETUNE_PYTHON)
  add_test(NAME cli_e2e_test
    COMMAND ${FREEZETUNE_PYTHON} ${PROJECT_SOURCE_DIR}/tests/integration/cli_e2e.py
      $<TARGET_FILE:freezetune-server> $<TARGET_FILE:freezetune-model> ${PROJECT_SOURCE_DIR})
  set_tests_properties(cli_e2e_test PROPERTIES
    TIMEOUT 400 LABELS "integration;client"
    ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python:${PROJECT_BINARY_DIR}/python;FREEZETUNE_CLI_BIN=$<TARGET_FILE:freezetune>;FREEZETUNE_VERSION=${PROJECT_VERSION}")
endif()

# scripts/demo.sh (what `make demo` runs) on a 1,000-sentence slice, and the
# stage-2 report it writes rendered by headless chromium.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune AND FREEZETUNE_PYTHON)
  add_test(NAME demo_report_test
    COMMAND ${FREEZETUNE_PYTHON} ${PROJECT_SOURCE_DIR}/tests/integration/demo_report_test.py
      ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  set_tests_properties(demo_report_test PROPERTIES TIMEOUT 600 LABELS "integration;client")
endif()
