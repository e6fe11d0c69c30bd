# Shared helpers for the init-image scripts (sourced, not run).
# shellcheck shell=bash

INIT_IMAGE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$INIT_IMAGE_DIR/.." && pwd)
# Fixed timestamp for every file that goes into an image, so that same inputs give same bytes.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
warn() { printf '\n%s: WARNING: %s\n\n' "${0##*/}" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "${0##*/}" "$*" >&2
	exit 1
}

# need TOOL PACKAGE: fail with a message naming the Debian package to install.
need() {
	local tool=$1 pkg=$2
	if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
		die "'$tool' not found: install it with 'apt-get install $pkg' (it is listed in .ci/apt-packages)"
	fi
}

# sbin TOOL: path of a tool that may live in /usr/sbin, which is not on a non-root PATH.
sbin() {
	command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || echo "/sbin/$1"
}

# as_root CMD...: run CMD as (fake) root so that files it creates or archives are owned by 0:0.
as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	else
		need fakeroot fakeroot
		fakeroot -- "$@"
	fi
}

# ext4_fix_times IMG DIR: mkfs.ext4 -d copies atime and ctime from the source tree (ctime is always "now",
# and reading a file may bump its atime); set atime, ctime and crtime of every inode that DIR put into IMG
# to SOURCE_DATE_EPOCH so that the image bytes depend on the contents only.
ext4_fix_times() {
	local img=$1 dir=$2 t=@$SOURCE_DATE_EPOCH
	(cd "$dir" && { echo /; echo /lost+found; find . -mindepth 1 | LC_ALL=C sort | sed 's|^\.||'; }) |
		while IFS= read -r p; do
			for f in atime ctime crtime; do printf 'sif "%s" %s %s\nsif "%s" %s_extra 0\n' "$p" $f "$t" "$p" $f; done
			printf 'sif "%s" mtime_extra 0\n' "$p"
		done | E2FSPROGS_FAKE_TIME=$((SOURCE_DATE_EPOCH > 0 ? SOURCE_DATE_EPOCH : 1)) "$(sbin debugfs)" -w -f - "$img" >/dev/null 2>"$img.debugfs.log" ||
		die "debugfs could not normalise timestamps in $img: $(tail -n 3 "$img.debugfs.log")"
	if grep -v '^debugfs ' "$img.debugfs.log" | grep -q .; then
		die "debugfs reported errors while normalising timestamps in $img: $(grep -v '^debugfs ' "$img.debugfs.log" | head -n 3)"
	fi
	rm -f "$img.debugfs.log"
}
