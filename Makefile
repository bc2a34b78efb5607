# The two commands of the README:
#   make demo   build, start a server, fine-tune a small BERT on SST-2, stop
#   make test   build and run every test (what CI runs)
BUILD_DIR ?= build
export BUILD_DIR

.PHONY: build demo test bench clean

build:
	scripts/setup.sh

demo: build
	scripts/demo.sh

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j2 --timeout 600

bench: build
	cmake --build $(BUILD_DIR) --target benchmarks
	tests/bench/run.sh

clean:
	rm -rf $(BUILD_DIR) var
