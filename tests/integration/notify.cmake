# Completion callbacks end to end: the real server POSTs signed final records
# to a Python http.server on loopback (notify_e2e.py): success, failure (job
# submitted with the CLI), receiver down/erroring/misconfigured then up,
# restart with a pending callback, submit-time checks.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune
   AND TARGET freezetune_python_stubs AND FREEZETUNE_PYTHON)
  add_test(NAME notify_e2e_test
    COMMAND ${FREEZETUNE_PYTHON} ${PROJECT_SOURCE_DIR}/tests/integration/notify_e2e.py
      $<TARGET_FILE:freezetune-server> $<TARGET_FILE:freezetune-model> ${PROJECT_SOURCE_DIR})
  set_tests_properties(notify_e2e_test PROPERTIES
    TIMEOUT 400 LABELS "integration;notify"
    ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python:${PROJECT_BINARY_DIR}/python;FREEZETUNE_CLI_BIN=$<TARGET_FILE:freezetune>")
endif()
