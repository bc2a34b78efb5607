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
