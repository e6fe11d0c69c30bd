#!/usr/bin/env bash
# Turn a root filesystem tarball into an ext4 disk image, keeping owners, modes, symlinks, hard links and
# device nodes, without needing root on the host.
# Usage: tar-to-ext4.sh ROOTFS.tar OUT.img [SIZE_MiB]
#   ROOTFS.tar  a tar (compressed ones too: tar detects gzip/xz/zstd)
#   SIZE_MiB    image size; default: the unpacked size plus 25% and 16 MiB (the file is sparse)
# How: unpack with tar under fakeroot (numeric owners as in the archive), then mkfs.ext4 -d in the same
# fakeroot session, which reads the faked owners back. e2fsprogs 1.47.0 (Debian 12) cannot take a tarball
# in -d (that arrived in 1.47.1), so the directory step is needed. See docs/decisions/rootfs-images.md.
# Timestamps other than mtime are set to SOURCE_DATE_EPOCH (default 0), with a fixed UUID, so the same
# tarball gives the same image.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] && [ $# -le 3 ] || die "usage: $0 ROOTFS.tar OUT.img [SIZE_MiB]"
tarball=$1 out=$2 size_mib=${3:-}
need tar tar
need mkfs.ext4 e2fsprogs
need debugfs e2fsprogs
[ -f "$tarball" ] || die "tarball '$tarball' not found"
[ -z "$size_mib" ] || [[ $size_mib =~ ^[0-9]+$ ]] || die "SIZE_MiB must be a number of MiB, got '$size_mib'"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root" "$(dirname "$out")"
rm -f "$out.tmp"
fake_time=$((SOURCE_DATE_EPOCH > 0 ? SOURCE_DATE_EPOCH : 1))
# One (fake)root session for both steps: fakeroot keeps the owners tar sets only in its own memory.
as_root sh -e -c '
	tarball=$1 root=$2 img=$3 size_mib=$4 fake_time=$5 mkfs=$6
	tar -xpf "$tarball" -C "$root" --numeric-owner --same-owner --same-permissions
	if [ -z "$size_mib" ]; then
		kib=$(du -sk --apparent-size "$root" | cut -f1)
		files=$(find "$root" | wc -l)
		size_mib=$(( (kib * 5 / 4 + files * 4 + 16384) / 1024 ))
	fi
	# ^resize_inode: its 1023 reserved descriptor blocks are 4 MiB in every image layer for an online
	# growth no container disk does (resize2fs can still grow one offline).
	E2FSPROGS_FAKE_TIME=$fake_time "$mkfs" -q -F -d "$root" -m 0 -b 4096 -O ^resize_inode \
		-U 5e7e7e7e-0000-4000-8000-000000000003 -E hash_seed=5e7e7e7e-0000-4000-8000-000000000004 \
		"$img" "${size_mib}M" >/dev/null
' sh "$tarball" "$work/root" "$out.tmp" "$size_mib" "$fake_time" "$(sbin mkfs.ext4)" ||
	die "could not turn $tarball into an ext4 image (see the messages above; a too small SIZE_MiB gives 'Could not allocate block')"
ext4_fix_times "$out.tmp" "$work/root"
mv "$out.tmp" "$out"
log "$out: $(($(stat -c %s "$out") / 1048576)) MiB image, $(du -sk "$out" | cut -f1) KiB allocated, from $tarball"
