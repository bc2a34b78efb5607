# Deploy checks (issue 7): Kubernetes manifests rendered with kubectl
# kustomize, Prometheus rules checked and unit-tested with promtool, PromQL in
# the rules and the Grafana dashboard parsed by promtool, Dockerfiles linted,
# and a live test against a real server scraped by a real Prometheus.
# Scripts live in tests/deploy/. The tools come from scripts/debian-packages.txt
# (prometheus, kubernetes-client, python3-yaml); a missing tool fails the test.
find_program(FREEZETUNE_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT FREEZETUNE_PYTHON3)
  set(FREEZETUNE_PYTHON3 /usr/bin/python3)
endif()
set(_deploy ${PROJECT_SOURCE_DIR}/deploy)
set(_deploy_tests ${PROJECT_SOURCE_DIR}/tests/deploy)

add_test(NAME deploy_k8s_render
  COMMAND ${FREEZETUNE_PYTHON3} ${_deploy_tests}/k8s_render_test.py ${PROJECT_SOURCE_DIR})
add_test(NAME deploy_promtool_check_rules
  COMMAND promtool check rules ${_deploy}/prometheus/freezetune.rules.yml)
add_test(NAME deploy_promtool_check_config
  COMMAND promtool check config ${_deploy}/prometheus/prometheus.yml)
add_test(NAME deploy_promtool_test_rules
  COMMAND promtool test rules ${_deploy}/prometheus/tests/freezetune.rules.test.yml)
set_tests_properties(deploy_k8s_render deploy_promtool_check_rules
  deploy_promtool_check_config deploy_promtool_test_rules
  PROPERTIES LABELS "deploy" TIMEOUT 120)
add_test(NAME deploy_promql_check
  COMMAND ${FREEZETUNE_PYTHON3} ${_deploy_tests}/promql_check_test.py ${PROJECT_SOURCE_DIR})
set_tests_properties(deploy_promql_check PROPERTIES LABELS "deploy" TIMEOUT 120)
add_test(NAME deploy_dockerfiles
  COMMAND ${FREEZETUNE_PYTHON3} ${_deploy_tests}/dockerfile_test.py ${PROJECT_SOURCE_DIR})
add_test(NAME deploy_grpc_health_check
  COMMAND ${FREEZETUNE_PYTHON3} ${_deploy_tests}/grpc_health_check_test.py ${PROJECT_SOURCE_DIR})
set_tests_properties(deploy_dockerfiles deploy_grpc_health_check PROPERTIES LABELS "deploy" TIMEOUT 120)

# The live test needs the three programs; a client-only build
# (-DFREEZETUNE_BUILD_SERVER=OFF) has no server, so it is not registered there.
if(TARGET freezetune-server AND TARGET freezetune-model AND TARGET freezetune)
  add_test(NAME deploy_prometheus_live
    COMMAND ${_deploy_tests}/prometheus_live_test.sh
            $<TARGET_FILE:freezetune-server> $<TARGET_FILE:freezetune-model>
            $<TARGET_FILE:freezetune> ${PROJECT_SOURCE_DIR})
  set_tests_properties(deploy_prometheus_live PROPERTIES LABELS "deploy;integration" TIMEOUT 180)
endif()
