# Entry points for people and CI.  Every target installs what is missing
# (scripts/install-deps.sh is idempotent) and builds from scratch if needed.
BUILD      ?= build
BUILD_SAN  ?= build-sanitize
JOBS       ?= $(shell nproc)
CONFIG     ?=

.PHONY: all deps build run test test-sanitize check clean

all: build

deps:
	@sh scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BUILD) -j $(JOBS)

# Runs the proxy on the embedded default config (or CONFIG=FILE).
run: build
	./$(BUILD)/bin/portcullis serve $(if $(CONFIG),-c $(CONFIG))

test: build
	cd $(BUILD) && ctest --output-on-failure -j 2

test-sanitize: deps
	cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DPORTCULLIS_SANITIZE=ON
	cmake --build $(BUILD_SAN) -j $(JOBS)
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

clean:
	rm -rf $(BUILD) $(BUILD_SAN)
