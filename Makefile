# Entry points for people and CI.  Every target installs what is missing
# (scripts/install-deps.sh is idempotent) and builds from scratch if needed.
BUILD      ?= build
BUILD_SAN  ?= build-sanitize
JOBS       ?= $(shell nproc)
CONFIG     ?=

.PHONY: all deps build run test test-sanitize test-valgrind fuzz clean

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

# The proxy's integration tests with portcullis under valgrind (memcheck).
VALGRIND_TESTS ?= test_proxy_http test_proxy_connect test_proxy_reasons test_proxy_dns test_proxy_workers
test-valgrind: build
	cd tests/integration && for t in $(VALGRIND_TESTS); do \
		echo "== valgrind: $$t"; \
		PORTCULLIS_REAL=$(CURDIR)/$(BUILD)/bin/portcullis \
		PORTCULLIS=$(CURDIR)/tests/valgrind-portcullis.sh \
		PORTCULLIS_BRIDGE=$(CURDIR)/$(BUILD)/bin/portcullis-bridge \
		python3 $$t.py || exit 1; \
	done

# Every libFuzzer harness for FUZZ_SECONDS each (clang, ASan+UBSan).
FUZZ_SECONDS ?= 30
fuzz: deps
	cmake -S tests/fuzz -B build-fuzz -DCMAKE_C_COMPILER=clang
	cmake --build build-fuzz -j $(JOBS)
	sh tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(BUILD_SAN) build-fuzz
