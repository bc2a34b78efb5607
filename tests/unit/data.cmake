# Data layer: URIs, dataset parsing, label spaces (torch-free), encoding and
# batching (torch + tokenizer).
if(TARGET freezetune_data_io)
  freezetune_test(data_uri_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/data_uri_test.cc
    DEPS freezetune_data_io TIMEOUT 60)
  freezetune_test(data_dataset_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/data_dataset_test.cc
    DEPS freezetune_data_io TIMEOUT 60)
endif()
if(TARGET freezetune_data)
  freezetune_test(data_batching_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/data_batching_test.cc
    DEPS freezetune_data TIMEOUT 60)
  freezetune_test(data_encode_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/data_encode_test.cc
    DEPS freezetune_data TIMEOUT 60)
endif()
