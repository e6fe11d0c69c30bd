#!/usr/bin/env bash
# The main job: tetherd on its embedded default (QEMU), the bundled busybox image loaded with `docker load`,
# and a `docker run` against it: the real docker CLI, each container a VM. Leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/tether-demo.XXXXXX)
sock="$work/tetherd.sock"
cleanup() {
	{ set +x; } 2>/dev/null
	docker -H "unix://$sock" rm -f demo >/dev/null 2>&1 || true
	[ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
bin/tetherd --root "$work/root" --socket "$sock" --log-level warn &
daemon=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
export DOCKER_HOST="unix://$sock"
set -x
docker version --format 'client {{.Client.Version}} (API {{.Client.APIVersion}}) -> server {{.Server.Version}} (API {{.Server.APIVersion}})'
docker load -i build/image/busybox-image.tar
docker run --name demo tether/busybox uname -a
docker ps -a
bin/tetherctl health --socket "$sock" demo
docker rm demo
