# Client library and CLI tests: a real grpc::Server on 127.0.0.1:0 with a fake
# FineTuneService the tests script (client_fake_server.h).
if(TARGET freezetune_client)
  freezetune_test(client_library_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_library_test.cc
    DEPS freezetune_client gRPC::grpc++ absl::synchronization
    LABELS client TIMEOUT 120)

  freezetune_test(client_cli_format_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_cli_format_test.cc
    DEPS freezetune_cli
    LABELS client TIMEOUT 60)

  # Runs the built `freezetune` binary, so it must be built first.
  freezetune_test(client_cli_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/client_cli_test.cc
    DEPS freezetune_grpc gRPC::grpc++ absl::synchronization absl::strings
    LABELS client TIMEOUT 180)
  add_dependencies(client_cli_test freezetune)
endif()

# The installed CMake package (cmake --install --component client) works for
# an outside project: find_package(freezetune CONFIG) + freezetune::client.
if(TARGET freezetune_client AND TARGET freezetune)
  add_test(NAME client_package_test
    COMMAND sh ${PROJECT_SOURCE_DIR}/client/cmake/package_test.sh
      ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR}
      ${PROJECT_BINARY_DIR}/client_package_test)
  set_tests_properties(client_package_test PROPERTIES
    TIMEOUT 600 LABELS "client;slow")
endif()

# The Python client (client/python) against a real in-process grpc.server,
# with stubs generated into <build>/python by freezetune_python_stubs.
if(TARGET freezetune_python_stubs AND FREEZETUNE_PYTHON)
  add_test(NAME client_python_test
    COMMAND ${FREEZETUNE_PYTHON} -m unittest discover -v
      -s ${PROJECT_SOURCE_DIR}/client/python/tests)
  set_tests_properties(client_python_test PROPERTIES
    TIMEOUT 120 LABELS client
    ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python:${PROJECT_BINARY_DIR}/python")
endif()
