# Unit tests of store/ (the store over its backends, the event tail, the
# subscriber hub).
# Server libraries only (a client-only build has none).
if(FREEZETUNE_BUILD_SERVER)
  freezetune_test(store_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/store_test.cc
    DEPS freezetune_store
    LABELS store TIMEOUT 120)
  freezetune_test(store_event_tail_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/store_event_tail_test.cc
    DEPS freezetune_store
    LABELS store TIMEOUT 60)
  freezetune_test(store_subscriber_hub_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/store_subscriber_hub_test.cc
    DEPS freezetune_store
    LABELS store TIMEOUT 60)
endif()
