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

# Operations through the real binary: kill -9 durability, limit flags,
# --unary_deadline, --log_format=json, --help.
if(TARGET freezetune-server AND TARGET freezetune-model)
  freezetune_test(server_ops_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/server_ops_test.cc
    DEPS freezetune_grpc gRPC::grpc++ nlohmann_json::nlohmann_json
    LABELS integration TIMEOUT 300)
  target_compile_definitions(server_ops_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(server_ops_test freezetune-server freezetune-model)
endif()

# The drain is bounded by --drain_grace_period (issue 14.2): SIGTERM during
# a training step several seconds long, exit within the grace period, the
# job QUEUED and resumed by a restart; SIGTERM during a completion callback
# that never gets an answer, exit 1 s after the grace period.
if(TARGET freezetune-server AND TARGET freezetune-model)
  freezetune_test(server_drain_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/server_drain_test.cc
    DEPS freezetune_grpc gRPC::grpc++
    LABELS integration TIMEOUT 600)
  target_compile_definitions(server_drain_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(server_drain_test freezetune-server freezetune-model)
endif()
