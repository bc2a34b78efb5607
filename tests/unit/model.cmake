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
  freezetune_test(dropout_mask_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/dropout_mask_test.cc
    DEPS freezetune_model TIMEOUT 60 LABELS model)
endif()
if(TARGET freezetune_model AND TARGET freezetune_tokenizer)
  freezetune_test(lora_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/lora_test.cc
    DEPS freezetune_model TIMEOUT 60 LABELS model)
  freezetune_test(hf_checkpoint_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/hf_checkpoint_test.cc
    DEPS freezetune_model TIMEOUT 60 LABELS model)
endif()

# Independent float64 reference BERT in Python (Debian's python3-torch, no
# transformers) against `freezetune-model predict` on 200 SST-2 dev sentences:
# prefixed F32, no-prefix F32 and BF16 checkpoints. Skips (77) without torch.
if(TARGET freezetune-model)
  find_program(FREEZETUNE_SYSTEM_PYTHON3 python3 PATHS /usr/bin NO_DEFAULT_PATH)
  if(FREEZETUNE_SYSTEM_PYTHON3)
    add_test(NAME bert_numerics_test
      COMMAND ${FREEZETUNE_SYSTEM_PYTHON3} ${PROJECT_SOURCE_DIR}/tests/numerics/bert_numerics_test.py
              --tool $<TARGET_FILE:freezetune-model>
              --shared ${PROJECT_SOURCE_DIR}/../shared
              --workdir ${CMAKE_CURRENT_BINARY_DIR}/bert_numerics
              --n 200)
    set_tests_properties(bert_numerics_test PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77
      LABELS "model;numerics")
    # The tool's command-line contract (standard library only).
    add_test(NAME freezetune_model_cli_test
      COMMAND ${FREEZETUNE_SYSTEM_PYTHON3} ${PROJECT_SOURCE_DIR}/tests/numerics/freezetune_model_cli_test.py
              --tool $<TARGET_FILE:freezetune-model>
              --shared ${PROJECT_SOURCE_DIR}/../shared
              --workdir ${CMAKE_CURRENT_BINARY_DIR}/freezetune_model_cli)
    set_tests_properties(freezetune_model_cli_test PROPERTIES TIMEOUT 180 LABELS "model")
    # LoRA: a PEFT adapter (random, PEFT key names) on a base model, unmerged
    # (predict --adapter) and merged (merge-adapter), against a float64
    # reference computing base + (alpha / r) B A x. Skips (77) without torch.
    add_test(NAME lora_numerics_test
      COMMAND ${FREEZETUNE_SYSTEM_PYTHON3} ${PROJECT_SOURCE_DIR}/tests/numerics/lora_numerics_test.py
              --tool $<TARGET_FILE:freezetune-model>
              --shared ${PROJECT_SOURCE_DIR}/../shared
              --workdir ${CMAKE_CURRENT_BINARY_DIR}/lora_numerics)
    set_tests_properties(lora_numerics_test PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77
      LABELS "model;numerics;peft")
    # The masked-LM head (tied decoder) against a float64 reference.
    add_test(NAME mlm_numerics_test
      COMMAND ${FREEZETUNE_SYSTEM_PYTHON3} ${PROJECT_SOURCE_DIR}/tests/numerics/mlm_numerics_test.py
              --tool $<TARGET_FILE:freezetune-model>
              --shared ${PROJECT_SOURCE_DIR}/../shared
              --workdir ${CMAKE_CURRENT_BINARY_DIR}/mlm_numerics)
    set_tests_properties(mlm_numerics_test PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77
      LABELS "model;numerics;peft")
  endif()
endif()
