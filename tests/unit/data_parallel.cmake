# Data-parallel training on the CPU (issue 13): real freezetune-worker
# processes, c10d Gloo over loopback.
if(TARGET freezetune_train AND TARGET freezetune-worker)
  freezetune_test(data_parallel_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/data_parallel_test.cc
    DEPS freezetune_train protobuf::libprotobuf
    TIMEOUT 600)
  target_compile_definitions(data_parallel_test PRIVATE
    FREEZETUNE_WORKER_BIN="$<TARGET_FILE:freezetune-worker>")
  add_dependencies(data_parallel_test freezetune-worker)
endif()

# Gang scheduling of data-parallel jobs (server/jobs/scheduler.h).
if(TARGET freezetune_jobs)
  freezetune_test(jobs_gang_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/jobs_gang_test.cc
    DEPS freezetune_jobs
    LABELS jobs TIMEOUT 120)
endif()
