#!/usr/bin/env bash
# Build the read-only runtime disk that stage0 mounts and whose /tether becomes PID 1.
# Usage: build-runtime.sh AGENT_BINARY EXEC_HELPER OUT.img
#   AGENT_BINARY  any ELF (the agent's single executable; a static test stand-in works too) -> /tether
#   EXEC_HELPER   the static exec helper -> /tether-exec
# Environment: TETHER_KERNEL_ROOT (default build/kernel/root, from fetch-kernel.sh) for the modules.
# Contents: /tether, /tether-exec, the libraries `ldd AGENT_BINARY` lists plus its ELF interpreter at their
# paths, /lib/modules/<release>/ with the modules the agent loads (and the virtio core they depend on, so
# modules.dep is complete), modules.dep, and empty mount points. Every file is owned by 0:0 (fakeroot when
# not root), mtimes are SOURCE_DATE_EPOCH, and the ext4 UUID, hash seed and timestamps are fixed, so
# the same inputs give the same image.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 3 ] || die "usage: $0 AGENT_BINARY EXEC_HELPER OUT.img"
agent=$1 helper=$2 out=$3
kroot=${TETHER_KERNEL_ROOT:-$REPO_DIR/build/kernel/root}
need mkfs.ext4 e2fsprogs
need depmod kmod
need readelf binutils
for f in "$agent" "$helper"; do
	[ -f "$f" ] || die "'$f' not found"
	[ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || die "'$f' is not an ELF executable"
done
release=$(cd "$kroot/lib/modules" 2>/dev/null && ls) || die "no kernel under '$kroot': run init-image/fetch-kernel.sh first (or set TETHER_KERNEL_ROOT)"
moddir=$kroot/lib/modules/$release
[ -f "$moddir/modules.dep" ] || die "$moddir/modules.dep missing: run init-image/fetch-kernel.sh (it runs depmod)"

# Modules the agent loads itself (stage0 already loaded virtio, virtio_ring, the transport and virtio_blk).
agent_modules="virtio_console failover net_failover virtio_net qemu_fw_cfg overlay squashfs vsock
	vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport button evdev"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{proc,sys,dev,run,tmp,mnt/root}
chmod 1777 "$stage/tmp"
install -m 0755 "$agent" "$stage/tether"
install -m 0755 "$helper" "$stage/tether-exec"

# Shared libraries and the ELF interpreter, at the paths the dynamic loader will look for them.
interp=$(readelf -lW "$agent" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')
if [ -n "$interp" ]; then
	libs=$(ldd "$agent") || die "ldd $agent failed: $libs"
	if grep -q 'not found' <<<"$libs"; then
		die "ldd $agent cannot resolve some libraries:$(grep 'not found' <<<"$libs")"
	fi
	for path in "$interp" $(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$libs"); do
		mkdir -p "$stage$(dirname "$path")"
		cp -L "$path" "$stage$path"
	done
fi

# Module closure over modules.dep, kept at the kernel's own relative paths so the generated modules.dep matches.
declare -A want=()
for m in $agent_modules; do
	line=$(grep -E "(^|/)${m}\.ko:" "$moddir/modules.dep" || true)
	if [ -z "$line" ]; then
		grep -qE "(^|/)${m}\.ko$" "$moddir/modules.builtin" || die "module $m is neither in $moddir/modules.dep nor built in"
		continue
	fi
	for rel in ${line/:/ }; do want[$rel]=1; done
done
for rel in "${!want[@]}"; do
	install -D -m 0644 "$moddir/$rel" "$stage/lib/modules/$release/$rel"
done
cp "$moddir"/modules.{order,builtin,builtin.modinfo} "$stage/lib/modules/$release/"
"$(sbin depmod)" -b "$stage" "$release"
# Keep only the files the agent needs: modules.dep (+ .bin for kmod tools), builtin lists, alias tables are unused.
find "$stage/lib/modules/$release" -maxdepth 1 -name 'modules.*' \
	! -name modules.dep ! -name modules.dep.bin ! -name modules.builtin ! -name modules.builtin.modinfo \
	! -name modules.order -delete

find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# Size: contents plus 20% and 4 MiB for ext4 metadata; the image is sparse.
size_kib=$(($(du -sk --apparent-size "$stage" | cut -f1) * 12 / 10 + 4096))
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
# mke2fs ignores E2FSPROGS_FAKE_TIME=0 (and then stamps the superblock and root with "now").
fake_time=$((SOURCE_DATE_EPOCH > 0 ? SOURCE_DATE_EPOCH : 1))
# No journal (the disk is only ever mounted read-only); fixed UUID, hash seed and time for reproducibility.
as_root sh -c 'chown -R 0:0 "$1" && E2FSPROGS_FAKE_TIME=$4 "$5" -q -F -d "$1" -L tether-runtime \
	-O ^has_journal -m 0 -b 4096 -U 5e7e7e7e-0000-4000-8000-000000000001 -E hash_seed=5e7e7e7e-0000-4000-8000-000000000002,root_owner=0:0 \
	"$2" "$3K" >/dev/null' sh "$stage" "$out.tmp" "$size_kib" "$fake_time" "$(sbin mkfs.ext4)"
ext4_fix_times "$out.tmp" "$stage"
mv "$out.tmp" "$out"
log "$out: $size_kib KiB image, $(du -sk "$out" | cut -f1) KiB allocated; agent $(stat -c %s "$agent") bytes, $(find "$stage/lib/modules" -name '*.ko' | wc -l) modules${interp:+, interpreter $interp}"
