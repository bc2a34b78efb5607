# WordPiece tokenizer tests: HF golden conformance and focused behaviour.
if(TARGET freezetune_tokenizer)
  freezetune_test(tokenizer_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/tokenizer_test.cc
    DEPS freezetune_tokenizer nlohmann_json::nlohmann_json TIMEOUT 60 LABELS model)
endif()
