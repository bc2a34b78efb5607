# End-to-end: the real freezetune-server binary on 127.0.0.1:0 (port read
# back from --port_file), a tiny model from the real freezetune-model tool,
# real training, driven through the raw generated gRPC stub.
if(TARGET freezetune-server AND TARGET freezetune-model)
  freezetune_test(server_e2e_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/server_e2e_test.cc
    DEPS freezetune_grpc gRPC::grpc++ absl::strings
    LABELS integration TIMEOUT 300)
  target_compile_definitions(server_e2e_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(server_e2e_test freezetune-server freezetune-model)
endif()
