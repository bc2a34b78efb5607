# The two commands of the README:
#   make demo   build, start a server, fine-tune a small BERT on SST-2, stop
#   make test   build and run every test (what CI runs)
BUILD_DIR ?= build
export BUILD_DIR

.PHONY: build demo test fuzz tsan bench clean

build:
	scripts/setup.sh

# The demo needs only the server, the model tool and the CLI, not the tests.
demo:
	scripts/setup.sh freezetune-server freezetune-model freezetune
	scripts/demo.sh

test: build fuzz tsan
	cd $(BUILD_DIR) && ctest --output-on-failure -j2 --timeout 600

# libFuzzer smoke runs (10 s each) of the untrusted-input parsers, in a clang
# build of their own; tests/fuzz/fuzz.cmake says how to fuzz for longer.
fuzz:
	CC=clang CXX=clang++ cmake -S . -B $(BUILD_DIR)-fuzz -DFREEZETUNE_BUILD_FUZZERS=ON \
	  -DFREEZETUNE_BUILD_SERVER=OFF >/dev/null
	cmake --build $(BUILD_DIR)-fuzz --target safetensors_fuzz bert_config_fuzz -j2
	cd $(BUILD_DIR)-fuzz && ctest --output-on-failure -L fuzz

# Concurrency checkers (docs/ARCHITECTURE.md), in a clang build of the
# torch-free libraries: -Wthread-safety -Werror on every one of them (base,
# common, data's torch-free part, metrics, store, jobs, sweeps, service), and
# the store, jobs, sweeps, metrics and service tests under ThreadSanitizer.
TSAN_TESTS := freezetune_base tsan_control store_test store_event_tail_test store_subscriber_hub_test \
  base_log_test jobs_scheduler_test jobs_output_test jobs_metrics_test sweeps_manager_test \
  sweeps_policy_test metrics_test service_status_mapping_test service_server_test \
  service_auth_test service_limits_test service_event_stream_test service_store_failure_test \
  jobs_store_recovery_test jobs_gang_test jobs_shared_queue_test
tsan:
	CC=clang CXX=clang++ cmake -S . -B $(BUILD_DIR)-tsan -DFREEZETUNE_WITH_TORCH=OFF \
	  -DFREEZETUNE_SANITIZE=thread -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD_DIR)-tsan --target $(TSAN_TESTS) -j2
	cd $(BUILD_DIR)-tsan && ctest --output-on-failure -j2 -L '^(store|jobs|sweeps|service|tsan)$$'

# The training benchmarks, then the kill -9 chaos run (10 cycles, 45 jobs and
# one to time the kills, 4 sweeps; about a minute; fails if an acknowledged
# job or sweep is lost or duplicated).
bench: build
	cmake --build $(BUILD_DIR) --target benchmarks
	tests/bench/run.sh
	$(BUILD_DIR)/tests/freezetune_chaos_bench $(BUILD_DIR)/server/freezetune-server 	  $(BUILD_DIR)/server/model/freezetune-model 10 45
	$(BUILD_DIR)/tests/freezetune_replicas_bench $(BUILD_DIR)/server/freezetune-server \
	  $(BUILD_DIR)/server/model/freezetune-model 200

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-fuzz $(BUILD_DIR)-tsan var
