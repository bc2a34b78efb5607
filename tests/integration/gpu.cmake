# The GPU check's scripts (issue 13), tested as far as a machine without a GPU
# allows: scripts/gpu/bundle.sh downloads the Debian packages, and
# scripts/gpu/check.sh unpacks them into a prefix, configures against it with
# Debian's CPU LibTorch and builds the CLI, inside a mount namespace that hides
# this machine's own copies (tests/integration/gpu_bundle_test.py). Needs root
# and the Debian archive, as `make test` on CI has. Label gpu-script, not gpu:
# it needs no GPU.
find_program(FREEZETUNE_SYSTEM_PYTHON3_GPU python3 PATHS /usr/bin NO_DEFAULT_PATH)
add_test(NAME gpu_bundle_configure
  COMMAND ${FREEZETUNE_SYSTEM_PYTHON3_GPU} ${PROJECT_SOURCE_DIR}/tests/integration/gpu_bundle_test.py
          ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/gpu-bundle-test)
set_tests_properties(gpu_bundle_configure PROPERTIES LABELS "gpu-script" TIMEOUT 1500)

# Tests that need a CUDA device (label gpu): skipped where LibTorch sees none,
# failed instead when FREEZETUNE_REQUIRE_GPU=1 (scripts/gpu/check.sh runs
# `ctest -L gpu` that way on the GPU machine).
if(TARGET freezetune_train)
  freezetune_test(gpu_trainer_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/integration/gpu_trainer_test.cc
    DEPS freezetune_train protobuf::libprotobuf
    LABELS gpu TIMEOUT 300)
  set_tests_properties(gpu_trainer_test PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
  if(TARGET c10_cuda)
    target_compile_definitions(gpu_trainer_test PRIVATE FREEZETUNE_WITH_CUDA=1)
  endif()
endif()
