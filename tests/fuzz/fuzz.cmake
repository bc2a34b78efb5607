# libFuzzer targets (clang only): configure a separate build directory, e.g.
#
#   CC=clang CXX=clang++ cmake -S . -B build-fuzz -DFREEZETUNE_BUILD_FUZZERS=ON \
#       -DFREEZETUNE_BUILD_SERVER=OFF
#   cmake --build build-fuzz --target safetensors_fuzz -j2
#   ctest --test-dir build-fuzz -R safetensors_fuzz   # ~10 s smoke run
#
# To fuzz longer (new inputs go to the first, writable corpus directory; the
# seeds in the source tree stay read-only; crashes land in the cwd):
#
#   mkdir -p /tmp/st-corpus
#   build-fuzz/tests/safetensors_fuzz -max_total_time=3600 -jobs=2 \
#       -dict=tests/fuzz/safetensors.dict -max_len=4096 \
#       /tmp/st-corpus tests/fuzz/corpus/safetensors
#
# A crash reproduces with `build-fuzz/tests/safetensors_fuzz crash-<sha1>`.
# bert_config_fuzz (config.json parsing) runs the same way with
# tests/fuzz/corpus/bert_config as its seeds.
if(FREEZETUNE_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "FREEZETUNE_BUILD_FUZZERS needs clang (CXX=clang++), got ${CMAKE_CXX_COMPILER_ID}")
  endif()
  if(NOT TARGET nlohmann_json::nlohmann_json)
    find_package(nlohmann_json CONFIG REQUIRED)
  endif()
  # The parser is compiled into the fuzzer (not linked from the library) so
  # it carries coverage instrumentation and ASan.
  add_executable(safetensors_fuzz
    ${PROJECT_SOURCE_DIR}/tests/fuzz/safetensors_fuzz.cc
    ${PROJECT_SOURCE_DIR}/server/model/safetensors_format.cc)
  target_include_directories(safetensors_fuzz PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(safetensors_fuzz PRIVATE -fsanitize=fuzzer,address -g -O1)
  target_link_options(safetensors_fuzz PRIVATE -fsanitize=fuzzer,address)
  target_link_libraries(safetensors_fuzz PRIVATE absl::strings absl::status absl::statusor
    nlohmann_json::nlohmann_json)
  freezetune_warnings(safetensors_fuzz)

  set(_st_corpus_out ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus/safetensors)
  file(MAKE_DIRECTORY ${_st_corpus_out})
  add_test(NAME safetensors_fuzz_smoke
    COMMAND safetensors_fuzz -max_total_time=10 -max_len=4096
            -dict=${PROJECT_SOURCE_DIR}/tests/fuzz/safetensors.dict
            ${_st_corpus_out} ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/safetensors)
  set_tests_properties(safetensors_fuzz_smoke PROPERTIES TIMEOUT 60 LABELS "fuzz;model")

  # config.json parsing (also torch-free), same pattern.
  add_executable(bert_config_fuzz
    ${PROJECT_SOURCE_DIR}/tests/fuzz/bert_config_fuzz.cc
    ${PROJECT_SOURCE_DIR}/server/model/bert_config.cc)
  target_include_directories(bert_config_fuzz PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(bert_config_fuzz PRIVATE -fsanitize=fuzzer,address -g -O1)
  target_link_options(bert_config_fuzz PRIVATE -fsanitize=fuzzer,address)
  target_link_libraries(bert_config_fuzz PRIVATE absl::strings absl::status absl::statusor
    nlohmann_json::nlohmann_json)
  freezetune_warnings(bert_config_fuzz)
  set(_cfg_corpus_out ${CMAKE_CURRENT_BINARY_DIR}/fuzz-corpus/bert_config)
  file(MAKE_DIRECTORY ${_cfg_corpus_out})
  add_test(NAME bert_config_fuzz_smoke
    COMMAND bert_config_fuzz -max_total_time=10 -max_len=4096
            ${_cfg_corpus_out} ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/bert_config)
  set_tests_properties(bert_config_fuzz_smoke PROPERTIES TIMEOUT 60 LABELS "fuzz;model")
endif()
