# Mixed precision (issue 13): loss scaler, autocast scope, validation, and
# bf16 training on the CPU through the real trainer.
if(TARGET freezetune_train)
  freezetune_test(train_precision_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/train_precision_test.cc
    DEPS freezetune_train protobuf::libprotobuf
    TIMEOUT 240)
endif()

# Out of memory during training: RESOURCE_EXHAUSTED naming the batch shape,
# memory released for the next job (a child process under RLIMIT_AS).
if(TARGET freezetune_train)
  freezetune_test(train_oom_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/train_oom_test.cc
    DEPS freezetune_train protobuf::libprotobuf
    TIMEOUT 240)
endif()
