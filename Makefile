# Tether: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := build
# node-gyp must build node-pty against local headers: this machine has no route to nodejs.org.
NPM_NODEDIR ?= $(if $(wildcard /usr/include/node/node_api.h),/usr,)

NODE_TEST := node --import tsx --test --test-reporter=spec
TS_SOURCES := $(shell find protocol/src agent/src hostside/src -name '*.ts' 2>/dev/null)
ESBUILD := node_modules/.bin/esbuild
# CommonJS bundles, as the single-executable build needs them too; sources avoid import.meta for that reason.
ESBUILD_FLAGS := --bundle --platform=node --target=node20 --format=cjs --log-level=warning \
	--external:node-pty --external:ssh2 --external:cpu-features

# Debian packages (QEMU, mkfs, fakeroot, a C compiler...): installed when missing (as root), else explained.
.PHONY: deps
deps:
	@bash .ci/install-deps

node_modules/.package-lock.json: package.json package-lock.json
	npm_config_nodedir=$(NPM_NODEDIR) npm ci --no-audit --no-fund
	@touch $@

.PHONY: help
help: ## show this list
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

.PHONY: build
build: bin/tether bin/tetherctl bin/tetherd bin/tether-exec ## build the agent, tetherctl, tetherd and the exec helper into bin/

bin/tether: node_modules/.package-lock.json $(TS_SOURCES)
	@mkdir -p bin
	$(ESBUILD) agent/src/main.ts $(ESBUILD_FLAGS) --outfile=dist/tether.cjs
	printf '#!/bin/sh\nexec node "$$(dirname "$$(readlink -f "$$0")")/../dist/tether.cjs" "$$@"\n' > $@ && chmod +x $@

bin/tetherctl: node_modules/.package-lock.json $(TS_SOURCES)
	@mkdir -p bin
	$(ESBUILD) hostside/src/cli/tetherctl.ts $(ESBUILD_FLAGS) --outfile=dist/tetherctl.cjs
	printf '#!/bin/sh\nexec node "$$(dirname "$$(readlink -f "$$0")")/../dist/tetherctl.cjs" "$$@"\n' > $@ && chmod +x $@

# pino and ws stay in node_modules: their optional native add-ons and worker files do not bundle.
bin/tetherd: node_modules/.package-lock.json $(TS_SOURCES)
	@mkdir -p bin
	$(ESBUILD) hostside/src/cli/tetherd.ts $(ESBUILD_FLAGS) --external:pino --external:ws --outfile=dist/tetherd.cjs
	printf '#!/bin/sh\nexec node "$$(dirname "$$(readlink -f "$$0")")/../dist/tetherd.cjs" "$$@"\n' > $@ && chmod +x $@

bin/tether-exec: $(wildcard native/tether-exec/*.c native/tether-exec/*.h)
	@mkdir -p bin
	gcc -Os -static -Wall -Wextra -Werror -o $@ native/tether-exec/*.c && strip $@

.PHONY: lint
lint: node_modules/.package-lock.json ## typecheck, lint and format check
	npx tsc -p tsconfig.json
	npx eslint --max-warnings=0 .
	npx prettier --check --log-level=warn .

.PHONY: test-unit
# The image store's tests load the bundled image (busybox-image.tar needs no VM, only busybox and mkfs).
test-unit: node_modules/.package-lock.json build/native/sys.node build/image/busybox-image.tar ## unit tests (pure logic, no I/O beyond temp dirs)
	$(NODE_TEST) $$(find test/unit -name '*.test.ts' | sort)

.PHONY: test-integration
test-integration: build build/image/busybox-image.tar ## the agent in --dev mode, tetherd with dev agents and the docker CLI, over unix sockets
	$(NODE_TEST) --test-concurrency=1 $$(find test/integration -name '*.test.ts' | sort)

.PHONY: test-e2e
test-e2e: build image ## the real boot image under QEMU (TCG): the agent as PID 1, tetherctl vm run
	$(NODE_TEST) --test-concurrency=1 $$(find test/e2e -name '*.test.ts' | sort)

.PHONY: test
test: deps ## everything CI runs: lint, unit, integration, e2e
	$(MAKE) lint
	$(MAKE) test-unit
	$(MAKE) test-integration
	$(MAKE) test-e2e

.PHONY: demo
demo: deps build image ## the main job: tetherd with the bundled image loaded, and a docker run against it
	bash scripts/demo.sh

.PHONY: bench
bench: build ## benchmarks, each printing ratios against an in-run baseline
	for b in $$(find bench -name '*.bench.ts' | sort); do env -u NODE_EXTRA_CA_CERTS node --import tsx $$b || exit 1; done

# The boot image carries the real agent (init-image/image.mk defaults to a static stand-in).
IMAGE_AGENT := build/image/tether
include init-image/agent.mk
include init-image/image.mk

.PHONY: clean
clean: ## remove build outputs
	rm -rf bin dist build
