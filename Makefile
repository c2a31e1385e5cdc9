# weft: the two commands a new user runs are `make demo` and `make test`; both set everything up.
SHELL := /bin/bash
.DEFAULT_GOAL := help
NODE_ADDON := build/Release/weft_native.node
JS_BUNDLE := lib/cli/main.js

.PHONY: help setup build bpf native tools native-debug test-native-debug js test typecheck lint layers unit fuzz demo bench clean

help:
	@echo "make demo   - build everything and run a 2-node lab with a sample app"
	@echo "make test   - build everything, typecheck, lint and run all tests (root)"
	@echo "make bench  - data-path benchmarks, results in BENCHMARKS.md (root)"
	@echo "make fuzz   - the fuzzers for FUZZ_SECONDS (600) in total, new inputs kept in test/fuzz/corpus"
	@echo "make drills - the fault drills at full length (control plane down 5 min), times in bench/results (root)"
	@echo "make soak   - SOAK_MINUTES (30) of load, policy churn, pod churn, certificate rotation and control-plane restarts (root)"

# Debian packages (only what is missing) and node modules (only when the lockfile changed).
setup: .cache/apt.stamp node_modules/.weft-stamp

.cache/apt.stamp: scripts/setup-debian.sh
	@bash scripts/setup-debian.sh
	@mkdir -p .cache && touch $@

node_modules/.weft-stamp: package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

build: setup bpf native js tools

# The bench's load generator and echo server (bench/tools/weft-load.c): C, so its own floor is small.
WEFT_LOAD := build/bench/weft-load
tools: $(WEFT_LOAD)

$(WEFT_LOAD): bench/tools/weft-load.c .cache/apt.stamp
	@mkdir -p $(dir $@)
	clang -O2 -g -Wall -Wextra -Werror -std=c11 -o $@ $<

bpf: .cache/apt.stamp
	@$(MAKE) --no-print-directory -C bpf

native: $(NODE_ADDON)

$(NODE_ADDON): binding.gyp $(wildcard native/*.cc native/*.h native/relay/*.cc native/relay/*.h) node_modules/.weft-stamp .cache/apt.stamp
	npm run --silent build:native -- --loglevel=error >/dev/null
	@touch $@

# The addons again in build/Debug with -D_GLIBCXX_ASSERTIONS (binding.gyp), and the native tests
# against them: run by hand (not part of `make test`); node-gyp keeps build/Release as it is.
native-debug: node_modules/.weft-stamp .cache/apt.stamp
	npx node-gyp configure build --debug --loglevel=error >/dev/null

test-native-debug: native-debug
	WEFT_NATIVE_BUILD=Debug npx vitest run test/hbone test/bpf/load.test.ts

# src/ bundled into lib/cli/main.js, which bin/weft.js runs instead of the sources (through tsx) when
# it is newer than everything under src/: files and directories (a removed file), as checked here.
js: $(JS_BUNDLE)

$(JS_BUNDLE): $(shell find src) scripts/build-js.mjs tsconfig.json node_modules/.weft-stamp
	@node scripts/build-js.mjs

typecheck: setup
	npx tsc --noEmit

lint: setup
	npx eslint .

# Import circles and imports that point up (.dependency-cruiser.cjs holds the layers).
layers: setup
	npx depcruise src --config .dependency-cruiser.cjs --output-type err

# The fuzzers run from a fixed seed here, so a CI run is reproducible; `make fuzz` explores.
unit: build
	FUZZ_SEED=$${FUZZ_SEED:-13} npx vitest run

test: build typecheck lint layers unit

# make test runs the fuzzers for about a minute; this runs them longer and keeps what they find.
fuzz: build
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} FUZZ_SAVE=1 npx vitest run test/fuzz

demo: build
	@bash scripts/demo.sh

bench: build
	@bash scripts/bench.sh

# The fault drills (test/e2e/drills.test.ts) at full length: `make test` runs them with the control
# plane down for 60 s; here it is down for WEFT_DRILL_CP_DOWN_S (300). About 15 minutes. The
# recovery times are printed and kept in bench/results/drills-<UTC time>.json for BENCHMARKS.md.
.PHONY: drills
drills: build
	@mkdir -p bench/results
	WEFT_DRILL_CP_DOWN_S=$${WEFT_DRILL_CP_DOWN_S:-300} WEFT_DRILL_RESULTS=$${WEFT_DRILL_RESULTS:-bench/results/drills-$$(date -u +%Y%m%dT%H%MZ).json} \
		npx vitest run test/e2e/drills.test.ts

# Not part of `make test` (30 minutes by default; test/e2e/soak.test.ts runs 2). See BENCHMARKS.md.
.PHONY: soak
soak: build
	@if [ "$$(id -u)" -ne 0 ]; then echo "make soak needs root (it runs a lab)" >&2; exit 1; fi
	node --import tsx bench/soak.ts

clean:
	rm -rf build lib .cache
	@$(MAKE) --no-print-directory -C bpf clean
