# Model layer tests: config.json, safetensors, BERT, Hugging Face directories.
if(TARGET freezetune_model)
  freezetune_test(bert_config_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/bert_config_test.cc
    DEPS freezetune_model TIMEOUT 60 LABELS model)
endif()
if(TARGET freezetune_model AND TARGET freezetune_safetensors_format)
  freezetune_test(safetensors_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/safetensors_test.cc
    DEPS freezetune_model TIMEOUT 60 LABELS model)
endif()
if(TARGET freezetune_model)
  freezetune_test(bert_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/bert_test.cc
    DEPS freezetune_model TIMEOUT 60 LABELS model)
endif()
if(TARGET freezetune_model AND TARGET freezetune_tokenizer)
  freezetune_test(hf_checkpoint_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/hf_checkpoint_test.cc
    DEPS freezetune_model TIMEOUT 60 LABELS model)
endif()
