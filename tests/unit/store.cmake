# Unit tests of store/ (the store over its backends, the event tail, the
# subscriber hub).
# Server libraries only (a client-only build has none).
if(FREEZETUNE_BUILD_SERVER)
  # A real, throwaway PostgreSQL server for tests (initdb + postgres on a
  # loopback port); also used by tests/integration/store.cmake.
  freezetune_library(freezetune_test_postgres
    SOURCES ${PROJECT_SOURCE_DIR}/tests/support/postgres_instance.cc
    DEPS absl::status absl::statusor absl::strings PkgConfig::LIBPQ)
  # Every store test runs against SQLite and against a real PostgreSQL
  # (skipped, saying why, only where PostgreSQL is not installed).
  freezetune_test(store_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/store_test.cc
    DEPS freezetune_store freezetune_test_postgres
    LABELS store TIMEOUT 180)
  freezetune_test(store_event_tail_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/store_event_tail_test.cc
    DEPS freezetune_store
    LABELS store TIMEOUT 60)
  freezetune_test(store_subscriber_hub_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/store_subscriber_hub_test.cc
    DEPS freezetune_store
    LABELS store TIMEOUT 60)
endif()

# Issue 12.2: two job managers on one real PostgreSQL share the queue
# (claims, cancel from the other, lost lease, drain); also under TSan.
if(FREEZETUNE_BUILD_SERVER AND TARGET freezetune_jobs)
  freezetune_test(jobs_shared_queue_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/jobs_shared_queue_test.cc
    DEPS freezetune_jobs freezetune_test_postgres
    LABELS jobs store TIMEOUT 180)
endif()
