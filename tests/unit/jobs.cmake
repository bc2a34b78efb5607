# Unit tests of jobs/ (scheduler + job manager with an injected runner) and
# service/ (status mapping, in-process gRPC).
if(TARGET freezetune_jobs)
  freezetune_test(jobs_scheduler_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/jobs_scheduler_test.cc
    DEPS freezetune_jobs
    LABELS jobs TIMEOUT 120)
endif()
if(TARGET freezetune_service)
  freezetune_test(service_status_mapping_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/service_status_mapping_test.cc
    DEPS freezetune_service
    LABELS service TIMEOUT 60)
endif()
if(TARGET freezetune_service)
  freezetune_test(service_server_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/service_server_test.cc
    DEPS freezetune_service
    LABELS service TIMEOUT 120)
endif()
if(TARGET freezetune_service)
  freezetune_test(service_auth_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/service_auth_test.cc
    DEPS freezetune_service
    LABELS service TIMEOUT 120)
endif()
if(TARGET freezetune_service)
  freezetune_test(service_limits_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/service_limits_test.cc
    DEPS freezetune_service
    LABELS service TIMEOUT 120)
endif()
# Output confinement and claims, tenant prefixes, inputs (issue 14 item 1);
# training metrics of a resumed job (item 7).
if(TARGET freezetune_jobs)
  freezetune_test(jobs_output_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/jobs_output_test.cc
    DEPS freezetune_jobs
    LABELS jobs TIMEOUT 120)
  freezetune_test(jobs_metrics_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/jobs_metrics_test.cc
    DEPS freezetune_jobs
    LABELS jobs TIMEOUT 60)
endif()
# The event-stream reactor against a scripted source (issue 14 item 8).
if(TARGET freezetune_service)
  freezetune_test(service_event_stream_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/service_event_stream_test.cc
    DEPS freezetune_service
    LABELS service TIMEOUT 120)
endif()
# metrics/: process_* series and the /metrics bearer token (issue 14 item 7).
if(TARGET freezetune_metrics)
  freezetune_test(metrics_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/metrics_test.cc
    DEPS freezetune_metrics
    LABELS service TIMEOUT 60)
endif()
# A store that refuses writes mid-job (a real SQLite file capped with
# max_page_count, then freed): no zombie RUNNING job, health and metrics
# (issue 14 item 3).
if(TARGET freezetune_service)
  freezetune_test(service_store_failure_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/service_store_failure_test.cc
    DEPS freezetune_service PkgConfig::SQLITE3
    LABELS service store TIMEOUT 180)
endif()
# Corrupt rows in a real SQLite file at start, and a lost store beside
# existing outputs (issue 14 item 5).
if(TARGET freezetune_jobs)
  freezetune_test(jobs_store_recovery_test
    SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/jobs_store_recovery_test.cc
    DEPS freezetune_jobs PkgConfig::SQLITE3
    LABELS jobs store TIMEOUT 120)
endif()
