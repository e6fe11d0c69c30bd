#!/usr/bin/env bash
# Build the test root filesystem tarball from Debian's busybox-static package.
# Usage: make-busybox-tar.sh CACHE_DIR OUT.tar
# Contents: /bin/busybox and a symlink per applet in /bin (plus /sbin, /usr/bin, /usr/sbin -> /bin),
# /etc/passwd and /etc/group with root, nobody and tester (1000:1000, also in audio(29) and wheel(10)),
# /etc/hostname, /tmp (1777), empty /proc /sys /dev /run /root /home/tester.
# Everything is owned by 0:0 except /home/tester (1000:1000); sorted names and mtime SOURCE_DATE_EPOCH make
# the tarball reproducible. Works without root (fakeroot).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ $# -eq 2 ] || die "usage: $0 CACHE_DIR OUT.tar"
cache=$1 out=$2
need dpkg dpkg
need tar tar
mkdir -p "$cache"

deb=$(ls "$cache"/busybox-static_*_amd64.deb 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$deb" ]; then
	need apt-get apt
	log "downloading busybox-static into $cache"
	(cd "$cache" && apt-get download busybox-static >&2) ||
		die "cannot download busybox-static: run 'apt-get update' (a Debian 12 bookworm source must be configured)"
	deb=$(ls "$cache"/busybox-static_*_amd64.deb | sort -V | tail -n 1)
else
	log "reusing cached $deb"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg -x "$deb" "$work/deb"
root=$work/root
mkdir -p "$root"/{bin,etc,proc,sys,dev,run,root,home/tester,tmp,usr}
install -m 0755 "$work/deb/bin/busybox" "$root/bin/busybox"
"$root/bin/busybox" --list | LC_ALL=C sort | while read -r applet; do
	[ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
chmod 0755 "$root/home/tester"
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
tester:x:1000:1000:Tether test user:/home/tester:/bin/sh
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
wheel:x:10:tester
audio:x:29:tester
tester:x:1000:
nogroup:x:65534:
GROUP
echo busybox >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
chmod 0644 "$root"/etc/*

mkdir -p "$(dirname "$out")"
as_root sh -c 'chown -R 0:0 "$1" && chown 1000:1000 "$1/home/tester" &&
	tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --numeric-owner --format=gnu -C "$1" -cf "$2" .' sh "$root" "$out.tmp"
mv "$out.tmp" "$out"
log "$out: $(stat -c %s "$out") bytes, ${deb##*/}, $(find "$root/bin" -type l | wc -l) applets"
