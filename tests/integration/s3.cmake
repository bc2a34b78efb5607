# s3:// end to end: the real freezetune-server with model, data, output and
# checkpoints on s3rver (tests/unit/s3.cmake installs it) on loopback.
if(TARGET freezetune-server AND TARGET freezetune-model)
  freezetune_test(s3_e2e_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/s3_e2e_test.cc
    DEPS freezetune_grpc freezetune_data_io gRPC::grpc++ absl::strings
    LABELS integration TIMEOUT 600)
  target_compile_definitions(s3_e2e_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(s3_e2e_test freezetune-server freezetune-model s3_test_server)
endif()
