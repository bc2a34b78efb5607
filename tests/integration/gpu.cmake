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

# check.sh's job stage, run on the CPU against this build (it needs the
# server, the model tool and the CLI).
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune)
  add_test(NAME gpu_check_job_stage_cpu
    COMMAND ${PROJECT_SOURCE_DIR}/tests/integration/gpu_check_job_cpu.sh
            ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  set_tests_properties(gpu_check_job_stage_cpu PROPERTIES LABELS "gpu-script" TIMEOUT 300)
endif()

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

# Multi-node data-parallel manifests (deploy/k8s/data-parallel): rendered with
# kubectl kustomize and checked against freezetune-worker's flags.
add_test(NAME deploy_dp_render
  COMMAND ${FREEZETUNE_SYSTEM_PYTHON3_GPU} ${PROJECT_SOURCE_DIR}/tests/deploy/dp_render_test.py
          ${PROJECT_SOURCE_DIR})
set_tests_properties(deploy_dp_render PROPERTIES LABELS "deploy" TIMEOUT 120)

# Precision and data-parallel jobs through the real server, the Python client
# and the CLI: submit-time errors, a killed rank failing its job while the
# server keeps running.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune AND TARGET freezetune_python_stubs)
  add_test(NAME gpu_ops_e2e_test
    COMMAND ${FREEZETUNE_SYSTEM_PYTHON3_GPU} ${PROJECT_SOURCE_DIR}/tests/integration/gpu_python_e2e.py
      $<TARGET_FILE:freezetune-server> $<TARGET_FILE:freezetune-model> ${PROJECT_SOURCE_DIR})
  set_tests_properties(gpu_ops_e2e_test PROPERTIES
    TIMEOUT 600 LABELS "integration"
    ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python:${PROJECT_BINARY_DIR}/python;FREEZETUNE_CLI=$<TARGET_FILE:freezetune>")
endif()
