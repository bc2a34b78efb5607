# Crash safety of the store through the real server binary (kill -9 during
# SubmitSweep; more in store_crash_test.cc's header).
if(TARGET freezetune-server AND TARGET freezetune-model)
  freezetune_test(store_crash_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/store_crash_test.cc
    DEPS freezetune_grpc gRPC::grpc++
    LABELS integration store TIMEOUT 300)
  target_compile_definitions(store_crash_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(store_crash_test freezetune-server freezetune-model)
endif()

# --job_store postgresql://...: a real server on a real PostgreSQL (started
# by the test, tests/support/postgres_instance.h) trains a job; a restarted
# server on a new data dir finds it.
if(TARGET freezetune-server AND TARGET freezetune-model)
  freezetune_test(store_postgres_e2e_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/store_postgres_e2e_test.cc
    DEPS freezetune_grpc gRPC::grpc++ freezetune_test_postgres
    LABELS integration store TIMEOUT 300)
  target_compile_definitions(store_postgres_e2e_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(store_postgres_e2e_test freezetune-server freezetune-model)
endif()

# Issue 12.2: replicas sharing one PostgreSQL (claims, watch and cancel on
# any replica, takeover after kill -9).
if(TARGET freezetune-server AND TARGET freezetune-model)
  freezetune_test(replicas_e2e_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/replicas_e2e_test.cc
    DEPS freezetune_grpc gRPC::grpc++ freezetune_test_postgres
    LABELS integration store TIMEOUT 400)
  target_compile_definitions(replicas_e2e_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(replicas_e2e_test freezetune-server freezetune-model)
endif()

# Issue 12.2's chaos test: three replicas, PostgreSQL and s3rver; kill -9
# and SIGSTOP; nothing lost or duplicated.
if(TARGET freezetune-server AND TARGET freezetune-model)
  freezetune_test(replicas_chaos_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/replicas_chaos_test.cc
    DEPS freezetune_grpc freezetune_data_io gRPC::grpc++ freezetune_test_postgres
    LABELS integration store TIMEOUT 600)
  target_compile_definitions(replicas_chaos_test PRIVATE
    FREEZETUNE_SERVER_BIN="$<TARGET_FILE:freezetune-server>"
    FREEZETUNE_MODEL_BIN="$<TARGET_FILE:freezetune-model>")
  add_dependencies(replicas_chaos_test freezetune-server freezetune-model s3_test_server)
endif()
