# Entry points for people and CI.  `make build` only builds; the targets
# that run things (run, test, test-sanitize, test-valgrind, fuzz, deb) first
# install what is missing (scripts/install-deps.sh is idempotent and never
# upgrades what is installed) and build from scratch if needed.
BUILD      ?= build
BUILD_SAN  ?= build-sanitize
JOBS       ?= $(shell nproc)
CONFIG     ?=
DEB_OUT    ?= $(BUILD)/deb
# Developers and CI build with -Werror; debian/rules turns it off.
CMAKE_FLAGS ?= -DPORTCULLIS_WERROR=ON

.PHONY: all deps build run test test-sanitize test-valgrind fuzz deb clean

all: build

deps:
	@sh scripts/install-deps.sh

build:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

# Runs the proxy on the embedded default config (or CONFIG=FILE).
run: deps
	@$(MAKE) --no-print-directory build
	./$(BUILD)/bin/portcullis serve $(if $(CONFIG),-c $(CONFIG))

test: deps
	@$(MAKE) --no-print-directory build
	cd $(BUILD) && ctest --output-on-failure -j 2

# LeakSanitizer is on by default with ASan here; programs that run inside a
# sandbox (the bridge; ctl in one test) turn it off themselves, because the
# seccomp filter refuses the ptrace it needs.  So ASAN_OPTIONS must not force
# detect_leaks=1 (the environment would override their defaults).
test-sanitize: deps
	cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DPORTCULLIS_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD_SAN) -j $(JOBS)
	cd $(BUILD_SAN) && ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j 2

# The integration tests with portcullis (serve, run, ctl, check) under
# valgrind memcheck.  Left out: test_hostile_slow and test_proxy_fdlimit
# (their timing and fd budgets assume a native process), test_setup_secrets
# (under valgrind, /proc/PID/environ shows valgrind's copy of the launcher's
# environment, which the launcher cannot scrub, so the secret check there
# would test valgrind).
VALGRIND_TESTS ?= test_proxy_http test_proxy_connect test_proxy_reasons \
	test_proxy_dns test_proxy_workers test_proxy_keepalive test_proxy_audit_fail \
	test_proxy_cli test_hostile_corpus test_hostile_tls test_hostile_addresses \
	test_sandbox_run test_phase_switch test_reload_config test_control_socket \
	test_control_listen test_request_hardening test_audit_queue test_audit_reserve \
	test_control_owner test_host_addresses test_ops test_socks5
VALGRIND_TESTS += test_audit_accounting test_report_mode
VALGRIND_TESTS += test_metrics test_audit_chain
VALGRIND_TESTS += test_audit_summary
VALGRIND_TESTS += test_sandbox_dns
VALGRIND_TESTS += test_tls_ca
VALGRIND_TESTS += test_intercept
VALGRIND_TESTS += test_intercept_tools
VALGRIND_TESTS += test_proxy_splice
VALGRIND_TESTS += test_attack_session
VALGRIND_TESTS += test_proxy_idle_tunnels
VALGRIND_TESTS += test_attack_tunnels
VALGRIND_TESTS += test_sandbox_start
test-valgrind: deps
	@$(MAKE) --no-print-directory build
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

# The Debian package (dpkg-buildpackage -us -uc -b, from a copy of the tree
# in a temp dir, so the checkout stays clean), checked with lintian; the
# .deb lands in $(DEB_OUT).  .ci/run installs it and checks it.
deb: deps
	sh scripts/build-deb.sh $(DEB_OUT) $(JOBS)

clean:
	rm -rf $(BUILD) $(BUILD_SAN) build-fuzz
