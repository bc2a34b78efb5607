# Unit tests of the train layer (server/train).
if(TARGET freezetune_train_core)
  freezetune_test(freeze_plan_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/freeze_plan_test.cc
    DEPS freezetune_train_core protobuf::libprotobuf
    TIMEOUT 60)
  freezetune_test(train_metrics_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/train_metrics_test.cc
    DEPS freezetune_train_core
    TIMEOUT 60)
  freezetune_test(train_hyperparameters_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/train_hyperparameters_test.cc
    DEPS freezetune_train_core protobuf::libprotobuf
    TIMEOUT 60)
  freezetune_test(train_history_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/train_history_test.cc
    DEPS freezetune_train_core
    TIMEOUT 60)
endif()

if(TARGET freezetune_train AND TARGET freezetune_data AND TARGET freezetune_model)
  freezetune_test(trainer_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/trainer_test.cc
    DEPS freezetune_train protobuf::libprotobuf
    TIMEOUT 240)
  freezetune_test(fused_adamw_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/fused_adamw_test.cc
    DEPS freezetune_train
    TIMEOUT 120)
  if(FREEZETUNE_ADAMW_VECTORIZED)  # server/train/CMakeLists.txt: the AVX kernels are built
    target_compile_definitions(fused_adamw_test PRIVATE FREEZETUNE_ADAMW_VECTORIZED=1)
  endif()
  freezetune_test(masked_lm_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/masked_lm_test.cc
    DEPS freezetune_train
    TIMEOUT 60)
  freezetune_test(prefix_store_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/prefix_store_test.cc
    DEPS freezetune_train)
endif()

if(TARGET freezetune_train AND TARGET freezetune_model)
  freezetune_test(train_encode_cache_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/train_encode_cache_test.cc
    DEPS freezetune_train
    TIMEOUT 60)
  freezetune_test(train_checkpoint_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/train_checkpoint_test.cc
    DEPS freezetune_train
    TIMEOUT 60)
endif()
