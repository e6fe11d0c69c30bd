#!/usr/bin/env bash
# Build the initramfs: /init (stage0) and the few modules stage0 loads, as a reproducible newc cpio.
# Usage: make-initramfs.sh KERNEL_ROOT STAGE0 OUT [gzip|zstd|none]
#   KERNEL_ROOT  the unpacked kernel package (build/kernel/root, from fetch-kernel.sh)
#   STAGE0       the static stage0 binary
# Same inputs give the same bytes: sorted names, mtime SOURCE_DATE_EPOCH (default 0), owner 0:0,
# cpio --reproducible (inode numbers renumbered, no device numbers), gzip -n.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 3 ] || die "usage: $0 KERNEL_ROOT STAGE0 OUT [gzip|zstd|none]"
kroot=$1 stage0=$2 out=$3 comp=${4:-gzip}
need cpio cpio
[ -f "$stage0" ] || die "stage0 binary '$stage0' not found (make builds it from init-image/stage0/stage0.c)"
release=$(cd "$kroot/lib/modules" 2>/dev/null && ls) || die "no kernel under '$kroot': run init-image/fetch-kernel.sh first"
moddir=$kroot/lib/modules/$release
[ -f "$moddir/modules.dep" ] || die "$moddir/modules.dep missing: run init-image/fetch-kernel.sh (it runs depmod)"

# The modules stage0 may load, for both transports (it picks one at boot). Keep in step with stage0.c.
modules="virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_mmio virtio_blk"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{dev,proc,sys,runtime} "$stage/lib/modules/$release"
install -m 0755 "$stage0" "$stage/init"
for m in $modules; do
	rel=$(grep -E "(^|/)${m}\.ko:" "$moddir/modules.dep" | cut -d: -f1 || true)
	if [ -z "$rel" ]; then
		if grep -qE "(^|/)${m}\.ko$" "$moddir/modules.builtin"; then
			log "$m is built into $release, not needed in the initramfs"
			continue
		fi
		die "module $m is neither in $moddir/modules.dep nor built in: this kernel cannot boot Tether"
	fi
	install -m 0644 "$moddir/$rel" "$stage/lib/modules/$release/$m.ko"
done
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

case $comp in
gzip) compress=(gzip -n -9) ;;
zstd) need zstd zstd && compress=(zstd -q -19 --no-progress -c) ;;
none) compress=(cat) ;;
*) die "unknown compression '$comp' (gzip, zstd or none)" ;;
esac

# fakeroot: /dev/console (so the kernel can give /init its stdio) and owner 0:0 without being root.
mkdir -p "$(dirname "$out")"
as_root sh -c 'cd "$1" && mknod -m 600 dev/console c 5 1 && touch -h -d "@$SOURCE_DATE_EPOCH" dev/console dev &&
	find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0' sh "$stage" |
	"${compress[@]}" >"$out.tmp"
mv "$out.tmp" "$out"
log "$out: $(stat -c %s "$out") bytes ($comp), modules: $(cd "$stage/lib/modules/$release" && ls | sed 's/\.ko$//' | tr '\n' ' ')"
