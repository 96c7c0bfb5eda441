# A-VM: build, run and test. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO        ?= cargo
# The kernel is a freestanding ELF built for the host target (no rust-src
# here), in its own target directory so host-only features never leak in:
# see kernel/build-image.sh.
AVM_IMAGE     := build/avm.elf
# tpm-crb's swtpm transport (and its swtpm tests) sit behind its `std` feature.
TEST_FEATURES := --features tpm-crb/std
FUZZ_SECONDS  ?= 10
# One target dir for every fuzz crate, so shared dependencies build once. The
# smoke run skips AddressSanitizer (the code under test is safe Rust; panics
# are what it looks for); `make fuzz` keeps it.
FUZZ_FLAGS    ?= --sanitizer none --target-dir $(CURDIR)/target/fuzz
FUZZ_CRATES   := drivers/tpm-crb attest net kernel verifier-host

.PHONY: help deps build kernel host run-qemu test test-unit test-integration lint fuzz fuzz-smoke bench clean

help:
	@echo "make run-qemu   boot a node under QEMU + swtpm, enrol it and attest it"
	@echo "make test       install deps, build, lint, unit + QEMU integration tests, fuzz smoke"
	@echo "make bench      image size, boot time, attestation latency; writes docs/benchmarks.md"
	@echo "make deps       install missing system packages and cargo-fuzz (idempotent)"
	@echo "make build      A-VM image at $(AVM_IMAGE), host tools in target/release"
	@echo "make fuzz       run every fuzz target for FUZZ_SECONDS (default $(FUZZ_SECONDS))"

deps:
	@bash scripts/deps.sh

kernel: deps
	kernel/build-image.sh $(AVM_IMAGE)

host: deps
	$(CARGO) build --release -p avm-qemu -p avm-verifier

build: kernel host

# Boots a node, enrols it with a fresh verifier, learns reference values from
# it and attests it (scripts/run-qemu.sh); everything is torn down on exit.
run-qemu: build
	bash scripts/run-qemu.sh

# The kernel image is linted on its own: its binary needs the `image`
# feature and the freestanding flags (see kernel/build-image.sh).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) -- -D warnings
	RUSTFLAGS="-C relocation-model=static" $(CARGO) clippy -p avm-kernel --features image --bins \
		--target x86_64-unknown-linux-gnu --target-dir target/kernel -- -D warnings

test-unit: deps
	$(CARGO) test --lib --bins $(TEST_FEATURES)
	$(CARGO) test -p avm-kernel --lib

# Integration tests boot real QEMU + swtpm; they need the image and host tools.
test-integration: build
	AVM_IMAGE=$(CURDIR)/$(AVM_IMAGE) $(CARGO) test --no-fail-fast --test '*' $(TEST_FEATURES)

fuzz-smoke: deps
	@set -o pipefail; for crate in $(FUZZ_CRATES); do \
		[ -d $$crate/fuzz ] || continue; \
		for target in $$(cd $$crate/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz list); do \
			echo "fuzz: $$crate $$target ($(FUZZ_SECONDS)s)"; \
			(cd $$crate/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_FLAGS) $$target -- \
				-max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 2>&1 | tail -n 3) || exit 1; \
		done; \
	done

fuzz: FUZZ_SECONDS := 120
fuzz: FUZZ_FLAGS := --target-dir $(CURDIR)/target/fuzz-asan
fuzz: fuzz-smoke

test: build lint test-unit test-integration fuzz-smoke
	@echo "make test: all passed"

bench: build
	bash scripts/bench.sh

clean:
	rm -rf build target
