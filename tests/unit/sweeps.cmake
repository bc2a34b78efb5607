# Unit tests of sweeps/: the I/O-free policy (candidates, selection, halving
# cuts, winner rule), and the manager with an injected runner (a whole sweep,
# atomic and idempotent submit, cancel, restart, orphans, listing, metrics).
# Server libraries only (a client-only build has none).
if(FREEZETUNE_BUILD_SERVER)
  freezetune_test(sweeps_policy_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/sweeps_policy_test.cc
    DEPS freezetune_sweeps
    LABELS sweeps TIMEOUT 60)
  freezetune_test(sweeps_manager_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/sweeps_manager_test.cc
    DEPS freezetune_sweeps
    LABELS sweeps jobs TIMEOUT 120)
endif()
