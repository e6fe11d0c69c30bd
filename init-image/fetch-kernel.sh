#!/usr/bin/env bash
# Download (or reuse from the cache) the pinned Debian cloud kernel, unpack it and generate modules.dep.
# Usage: fetch-kernel.sh BUILD_DIR        (the pin is init-image/kernel.env; TETHER_KERNEL_ENV overrides it)
# Outputs: BUILD_DIR/kernel/root/ (the unpacked package, with lib/modules/<release>/modules.dep),
#          BUILD_DIR/image/kernel.release, BUILD_DIR/image/vmlinuz (written last: it is the make target).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 BUILD_DIR"
build=$(mkdir -p "$1" && cd "$1" && pwd)
cache=$build/cache
mkdir -p "$cache" "$build/image"

need apt-get apt
need dpkg dpkg
need depmod kmod

# TETHER_KERNEL_ENV: another pin file (tests of the fallback use one that names a vanished package).
kernel_env=${TETHER_KERNEL_ENV:-$INIT_IMAGE_DIR/kernel.env}
[ -f "$kernel_env" ] || die "kernel pin file '$kernel_env' not found"
# shellcheck source=kernel.env
. "$kernel_env"
: "${KERNEL_PACKAGE:?kernel.env must set KERNEL_PACKAGE}" "${KERNEL_VERSION:?kernel.env must set KERNEL_VERSION}"

deb_of() { # PACKAGE VERSION -> cached .deb path, if present
	local f
	for f in "$cache/${1}_${2//:/%3a}_"*.deb; do [ -f "$f" ] && { echo "$f"; return 0; }; done
	return 1
}

download() { # PACKAGE VERSION -> .deb path
	local pkg=$1 ver=$2 deb
	if deb=$(deb_of "$pkg" "$ver"); then
		log "reusing cached $deb"
		echo "$deb"
		return 0
	fi
	log "downloading $pkg=$ver into $cache"
	(cd "$cache" && apt-get download "$pkg=$ver" >&2) || return 1
	deb_of "$pkg" "$ver"
}

if ! deb=$(download "$KERNEL_PACKAGE" "$KERNEL_VERSION"); then
	# The pinned ABI has been superseded and dropped from the mirror: take the newest cloud kernel rather than break CI.
	newest=$(apt-cache pkgnames linux-image- | grep -E '^linux-image-[0-9.]+-[0-9]+-cloud-amd64$' | sort -V | tail -n 1 || true)
	[ -n "$newest" ] || die "cannot download $KERNEL_PACKAGE=$KERNEL_VERSION and apt knows no linux-image-*-cloud-amd64: run 'apt-get update' (a Debian 12 bookworm source must be configured)"
	newver=$(apt-cache policy "$newest" | awk '/Candidate:/ {print $2}')
	warn "pinned kernel $KERNEL_PACKAGE=$KERNEL_VERSION (init-image/kernel.env) can no longer be downloaded;
  FALLING BACK to the newest available: $newest=$newver.
  The image is no longer the one that was tested: update init-image/kernel.env to this package."
	deb=$(download "$newest" "$newver") || die "cannot download the fallback kernel $newest=$newver either: check 'apt-get update' and network access to the Debian mirror"
fi

root=$build/kernel/root
rm -rf "$root"
mkdir -p "$root"
dpkg -x "$deb" "$root"
release=$(cd "$root/lib/modules" && ls)
[ "$(echo "$release" | wc -l)" = 1 ] || die "expected one kernel release in $deb, found: $release"
[ -f "$root/boot/vmlinuz-$release" ] || die "$deb has no boot/vmlinuz-$release"
# The package ships no modules.dep (its postinst runs depmod), so generate it here.
"$(sbin depmod)" -b "$root" "$release"
[ -s "$root/lib/modules/$release/modules.dep" ] || die "depmod produced no modules.dep for $release"

echo "$release" >"$build/image/kernel.release.tmp"
mv "$build/image/kernel.release.tmp" "$build/image/kernel.release"
cp "$root/boot/vmlinuz-$release" "$build/image/vmlinuz.tmp"
touch -d "@$SOURCE_DATE_EPOCH" "$build/image/vmlinuz.tmp"
mv "$build/image/vmlinuz.tmp" "$build/image/vmlinuz"
touch "$build/image/vmlinuz" # newer than its inputs for make
log "kernel $release from ${deb##*/}: $build/image/vmlinuz"
