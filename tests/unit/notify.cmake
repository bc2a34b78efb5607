# Completion callbacks (server/notify).
if(TARGET freezetune_notify)
  freezetune_test(notify_signature_test
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/notify_signature_test.cc
    DEPS freezetune_notify
    TIMEOUT 60)
endif()
