# bf16 against fp32 on the SST-2 slice (issue 13): within 1 point of
# accuracy, frozen weights verified. About a minute on 2 cores.
if(TARGET freezetune_train)
  freezetune_test(precision_sst2_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/precision_sst2_test.cc
    DEPS freezetune_train protobuf::libprotobuf
    LABELS integration TIMEOUT 900)
endif()
