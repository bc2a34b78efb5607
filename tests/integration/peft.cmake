# Parameter-efficient recipes (BitFit, LoRA), MLM and delta outputs through
# the real server, the Python client and the `freezetune` CLI.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune
   AND TARGET freezetune_python_stubs AND FREEZETUNE_PYTHON)
  add_test(NAME peft_python_e2e_test
    COMMAND ${FREEZETUNE_PYTHON} ${PROJECT_SOURCE_DIR}/tests/integration/peft_python_e2e.py
      $<TARGET_FILE:freezetune-server> $<TARGET_FILE:freezetune-model> ${PROJECT_SOURCE_DIR})
  set_tests_properties(peft_python_e2e_test PROPERTIES
    TIMEOUT 300 LABELS "integration;peft"
    ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python:${PROJECT_BINARY_DIR}/python;FREEZETUNE_CLI_BIN=$<TARGET_FILE:freezetune>")
endif()
