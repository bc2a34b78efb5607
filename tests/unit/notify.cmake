# Completion callbacks (server/notify): signatures, secrets, backoff,
# submit-time checks, and the durable queue on a real SQLite file.
freezetune_test(notify_signature_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/notify_signature_test.cc
  DEPS freezetune_notify
  LABELS notify TIMEOUT 60)
freezetune_test(notify_queue_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/notify_queue_test.cc
  DEPS freezetune_notify
  LABELS notify TIMEOUT 60)
