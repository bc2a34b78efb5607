# Model layer tests: config.json, safetensors, BERT, Hugging Face directories.
if(TARGET freezetune_model)
  freezetune_test(bert_config_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/bert_config_test.cc
    DEPS freezetune_model TIMEOUT 60 LABELS model)
endif()
