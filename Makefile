# The two commands of the README:
#   make demo   build, start a server, fine-tune a small BERT on SST-2, stop
#   make test   build and run every test (what CI runs)
BUILD_DIR ?= build
export BUILD_DIR

.PHONY: build demo test fuzz bench clean

build:
	scripts/setup.sh

# The demo needs only the server, the model tool and the CLI, not the tests.
demo:
	scripts/setup.sh freezetune-server freezetune-model freezetune
	scripts/demo.sh

test: build fuzz
	cd $(BUILD_DIR) && ctest --output-on-failure -j2 --timeout 600

# libFuzzer smoke runs (10 s each) of the untrusted-input parsers, in a clang
# build of their own; tests/fuzz/fuzz.cmake says how to fuzz for longer.
fuzz:
	CC=clang CXX=clang++ cmake -S . -B $(BUILD_DIR)-fuzz -DFREEZETUNE_BUILD_FUZZERS=ON \
	  -DFREEZETUNE_BUILD_SERVER=OFF >/dev/null
	cmake --build $(BUILD_DIR)-fuzz --target safetensors_fuzz bert_config_fuzz -j2
	cd $(BUILD_DIR)-fuzz && ctest --output-on-failure -L fuzz

bench: build
	cmake --build $(BUILD_DIR) --target benchmarks
	tests/bench/run.sh

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR)-fuzz var
