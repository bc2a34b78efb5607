# Unit tests of jobs/sweep_manager (winner rule; a sweep with an injected
# runner; sweeps survive a restart).
if(TARGET freezetune_jobs)
  freezetune_test(sweep_manager_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/sweep_manager_test.cc
    DEPS freezetune_jobs
    LABELS jobs TIMEOUT 120)
endif()
