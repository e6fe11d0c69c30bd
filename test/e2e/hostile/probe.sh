#!/bin/sh
# The hostile image's probe (busybox sh), run by test/e2e/isolation.test.ts: from inside a container it
# tries every way we know to see, touch or impersonate the agent, and prints one line per attempt:
#
#   REACHED <what>: <evidence>     the container got at something of the agent's or the VM's (a failure)
#   BLOCKED <what>: <the error>    the attempt failed, as it must
#   INFO <what>: <observation>     context for a reader (limits, how the memory hog and fork bomb ended)
#   PROBE DONE                     the last line: the probe survived everything it did
#
# `probe.sh full` (the image's command) does it all as the container's main process: reads for the host
# key, the agent's processes and ports, device nodes, mounts, modules, capabilities, forged status records,
# a memory hog, a fork bomb and signals to PID 1; then it waits for /tmp/probe-finish (created by the test
# through docker exec) and exits 7, an exit code the test can tell from the forged records' 42.
# `probe.sh passive` (run by docker exec) repeats only the checks that change nothing, to show that exec
# sessions are as shut in as the main process.
#
# Errors are captured, never fatal: the probe must reach its last line whatever the VM does to it.

MODE=${1:-full}
exec 2>&1
T=/tmp/probe
MARKER='PRIVATE KEY'
FW_CFG_CONFIG=/sys/firmware/qemu_fw_cfg/by_name/opt/tether/config/raw
# Docker's default capability set (CAP_CHOWN ... CAP_AUDIT_WRITE, CAP_SETFCAP): nothing beyond it.
DOCKER_CAPS=0xa80425fb
# The kernel's fixed inode numbers of the initial namespaces (include/linux/proc_ns.h): the agent's.
INIT_NS_UTS=4026531838
INIT_NS_IPC=4026531839
INIT_NS_PID=4026531836
INIT_NS_CGROUP=4026531835

rm -rf "$T" 2>/dev/null
mkdir -p "$T/mnt" "$T/proc" "$T/sys" "$T/cg" "$T/dev" "$T/us"
FIFO=$T/fifo
mkfifo "$FIFO"

# One line per finding, whatever the evidence holds (newlines, NULs, long command output).
say() { printf '%s %s: %s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\n\0\r\t' '    ' | cut -c1-300)"; }
reached() { say REACHED "$1" "$2"; }
blocked() { say BLOCKED "$1" "$2"; }
info() { say INFO "$1" "$2"; }

# Sleeps without forking (a shell builtin on a FIFO nobody writes): it must work while a fork bomb has
# used up every process slot the container has.
pause() { read -t "$1" _ <>"$FIFO"; }

# `major:minor` of a device node (decimal), or nothing.
devno() {
  set -- $(stat -L -c '%t %T' "$1" 2>/dev/null)
  [ $# -eq 2 ] && echo "$((0x$1)):$((0x$2))"
}

# Describes PID $1 if it is the agent (the Node single executable, or whoever holds the virtio ports).
agent_desc() {
  exe=$(readlink "/proc/$1/exe" 2>/dev/null)
  comm=$(cat "/proc/$1/comm" 2>/dev/null)
  ports=$(ls -l "/proc/$1/fd" 2>/dev/null | grep -o -E '/dev/(vport[0-9]+p[0-9]+|hvc[0-9]+)' | sort -u | tr '\n' ' ')
  case "$exe" in
  */tether | */tether' (deleted)' | */node | */node' (deleted)') ;;
  *) case "$comm" in MainThread | node | tether) ;; *) [ -n "$ports" ] || return 1 ;; esac ;;
  esac
  echo "pid $1 exe=${exe:-?} comm=$comm cmdline='$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)' ports=${ports:-none}"
}

# Runs "$@" and judges its output file $T/out: REACHED when the host key's marker is in it.
key_from() {
  what=$1
  shift
  if "$@" >"$T/out" 2>"$T/err"; then
    if grep -q -F "$MARKER" "$T/out"; then
      reached "host key via $what" "'$MARKER' in $(wc -c <"$T/out") bytes read"
    else
      blocked "host key via $what" "read $(wc -c <"$T/out") bytes, no key in them"
    fi
  else
    blocked "host key via $what" "$(cat "$T/err")"
  fi
}

# Reading a device at all is the finding (memory, raw disks, I/O ports): REACHED when bytes come back.
# Arguments: what, the device, and optionally a block size and a block to start at.
read_dev() {
  what=$1 dev=$2 bs=${3:-512} skip=${4:-0}
  if dd if="$dev" of="$T/out" bs="$bs" count=1 skip="$skip" 2>"$T/err" && [ -s "$T/out" ]; then
    evidence="read $(wc -c <"$T/out") bytes of $dev ($(devno "$dev"))"
    grep -q -F "$MARKER" "$T/out" && evidence="$evidence, with '$MARKER' in them"
    reached "$what" "$evidence"
  else
    err=$(grep -v -E 'records (in|out)|bytes .* copied' "$T/err" | head -n 2)
    blocked "$what" "${err:-read 0 bytes of $dev ($(devno "$dev")), nothing behind it}"
  fi
}

# A device node made with mknod at $1 (c|b major minor), or nothing if mknod was refused.
make_node() {
  path=$1
  shift
  rm -f "$path"
  if out=$(mknod "$path" "$@" 2>&1); then echo "$path"; else echo "mknod $path $*: $out" >"$T/mknod-err"; fi
}

# Where mknod'd nodes go: a directory of the container's root disk, and its /dev.
NODE_DIRS="$T /dev"

# Opens $2 for writing and writes nothing (a virtio port takes whatever bytes come as channel traffic).
# Opened, or busy because the agent holds it, both mean the port is within reach.
open_port() {
  what=$1 dev=$2
  if out=$( (exec 3>>"$dev") 2>&1); then
    reached "$what" "opened $dev ($(devno "$dev")) for writing"
  else
    case "$out" in
    *busy*) reached "$what" "$dev ($(devno "$dev")) exists and is busy: the agent holds it open" ;;
    *) blocked "$what" "$out" ;;
    esac
  fi
}

# ------------------------------------------------------------------------------------ who am I, who is near
check_identity() {
  # NSpid counts levels from the PID namespace of the /proc in view, so a container with a /proc of its
  # own shows one number too: the namespace's inode below is what tells.
  info "pid" "$(grep '^NSpid:' /proc/self/status)"
  # A cgroup namespace is Docker's habit, not a wall: only INFO (the cgroup itself is checked below).
  for ns in pid ipc uts cgroup; do
    link=$(readlink "/proc/self/ns/$ns" 2>/dev/null)
    eval init=\$INIT_NS_$(echo "$ns" | tr a-z A-Z)
    case "$ns:$link" in
    cgroup:*"[$init]") info "$ns namespace" "$link is the initial one" ;;
    *"[$init]") reached "$ns namespace" "$link is the initial one, the agent's" ;;
    '') info "$ns namespace" "no /proc/self/ns/$ns" ;;
    *) blocked "$ns namespace" "$link, not the initial one" ;;
    esac
  done
  info "cgroup" "$(cat /proc/self/cgroup)"
  if [ "$(cat /proc/self/cgroup)" = "0::/" ] && [ "$(readlink /proc/self/ns/cgroup)" = "cgroup:[$INIT_NS_CGROUP]" ]; then
    reached "cgroup of its own" "the container runs in the VM's root cgroup, with the agent"
  else
    blocked "cgroup of its own" "$(cat /proc/self/cgroup) in $(readlink /proc/self/ns/cgroup)"
  fi

  if desc=$(agent_desc 1); then reached "pid 1" "/proc/1 is the agent: $desc"; else blocked "pid 1" "/proc/1 is not the agent: comm=$(cat /proc/1/comm) exe=$(readlink /proc/1/exe) cmdline='$(tr '\0' ' ' </proc/1/cmdline)'"; fi

  p=$$ chain=
  while [ -n "$p" ] && [ "$p" != 0 ]; do
    chain="$chain $p($(cat "/proc/$p/comm" 2>/dev/null))"
    if desc=$(agent_desc "$p"); then reached "ancestors" "an ancestor of the probe is the agent: $desc"; fi
    p=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$p/status" 2>/dev/null)
  done
  info "ancestors" "$chain"

  seen=
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$$" ] && continue
    if desc=$(agent_desc "$pid"); then seen="$seen[$desc] "; fi
  done
  if [ -n "$seen" ]; then reached "agent processes" "visible: $seen"; else blocked "agent processes" "none of the $(ls -d /proc/[0-9]* | wc -l) visible processes is the agent"; fi

  fds=
  for d in /proc/[0-9]*/fd; do
    hit=$(ls -l "$d" 2>/dev/null | grep -o -E '/dev/(vport[0-9]+p[0-9]+|hvc[0-9]+)' | sort -u | tr '\n' ' ')
    [ -n "$hit" ] && fds="$fds$d: $hit; "
  done
  if [ -n "$fds" ]; then reached "agent fds" "virtio ports held open: $fds"; else blocked "agent fds" "no visible process holds a virtio port"; fi
}

# ------------------------------------------------------------------------------------------- the host key
check_key() {
  key_from "fw_cfg in /sys" cat "$FW_CFG_CONFIG"
  for d in /sys/firmware/qemu_fw_cfg/by_key/*; do
    [ -f "$d/raw" ] || continue
    size=$(cat "$d/size" 2>/dev/null)
    # The kernel and initrd are fw_cfg files too: megabytes read byte by byte, never the config.
    [ "${size:-0}" -lt 1048576 ] 2>/dev/null || continue
    if grep -q -F "$MARKER" "$d/raw" 2>/dev/null; then reached "host key via fw_cfg" "$d/raw ($(cat "$d/name" 2>/dev/null))"; fi
  done

  if out=$(mount -t sysfs sysfs "$T/sys" 2>&1); then
    key_from "a new sysfs mount" cat "$T/sys/firmware/qemu_fw_cfg/by_name/opt/tether/config/raw"
    umount "$T/sys" 2>/dev/null
  else
    blocked "host key via a new sysfs mount" "$out"
  fi
  # A user namespace gives its creator CAP_SYS_ADMIN over new mounts: sysfs mounts there unless the
  # container's /sys hides something (the kernel then refuses a fresh, more revealing sysfs).
  key_from "a sysfs mount in a new user namespace" \
    unshare -U -r -n -m sh -c "mount -t sysfs sysfs $T/us && cat $T/us/firmware/qemu_fw_cfg/by_name/opt/tether/config/raw"

  key_from "/proc/cmdline" cat /proc/cmdline
  key_from "/proc/1/environ" cat /proc/1/environ
  key_from "/proc/1/cmdline" cat /proc/1/cmdline
  all_proc() { for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat "$f" 2>/dev/null; done; }
  key_from "/proc/*/environ and /proc/*/cmdline" all_proc

  # Memory of PID 1 and of any agent process in view: every writable mapping, until the key shows up.
  pids=1
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" != 1 ] && [ "$pid" != "$$" ] && agent_desc "$pid" >/dev/null && pids="$pids $pid"
  done
  for pid in $pids; do
    is_agent=
    agent_desc "$pid" >/dev/null && is_agent=" (the agent)"
    found= total=0 err=
    if ! cat "/proc/$pid/maps" >"$T/maps" 2>"$T/err"; then
      blocked "host key via /proc/$pid/mem" "maps: $(cat "$T/err")"
      continue
    fi
    while read -r range perms _; do
      case $perms in rw*) ;; *) continue ;; esac
      s=$((0x${range%-*}))
      e=$((0x${range#*-}))
      n=$(dd if="/proc/$pid/mem" bs=4096 skip=$((s / 4096)) count=$(((e - s) / 4096)) 2>"$T/err" |
        tr -s '\000' '\n' | grep -c -F "$MARKER")
      got=$(sed -n 's/^\([0-9]*\)+[0-9]* records in$/\1/p' "$T/err" | head -n 1)
      total=$((total + ${got:-0} * 4096))
      [ -z "$err" ] && [ "${got:-0}" = 0 ] && err=$(grep -v -E 'records|copied' "$T/err" | head -n 1)
      if [ "$n" != 0 ]; then
        found=$range
        break
      fi
    done <"$T/maps"
    if [ -n "$found" ]; then
      reached "host key via /proc/$pid/mem" "'$MARKER' in the mapping $found of pid $pid$is_agent"
    elif [ "$total" -gt 0 ] && [ -n "$is_agent" ]; then
      reached "agent memory via /proc/$pid/mem" "read $total bytes of the agent's memory (no key found)"
    elif [ "$total" -gt 0 ]; then
      blocked "host key via /proc/$pid/mem" "read $total bytes of pid $pid ($(cat /proc/$pid/comm)), no key in them"
    else
      blocked "host key via /proc/$pid/mem" "${err:-nothing read}"
    fi
  done

  # Kernel memory and I/O ports (fw_cfg is I/O port 0x510): existing nodes, and nodes made anew.
  read_dev "/proc/kcore" /proc/kcore
  for name in mem kmem port; do
    # /dev/port is read at 0x80 only, the POST diagnostic port: reading it changes nothing.
    case $name in mem) minor=1 at='512 0' ;; kmem) minor=2 at='512 0' ;; port) minor=4 at='1 128' ;; esac
    if [ -e "/dev/$name" ]; then read_dev "/dev/$name" "/dev/$name" $at; fi
    for dir in $NODE_DIRS; do
      node=$(make_node "$dir/probe-$name" c 1 $minor)
      if [ -n "$node" ]; then read_dev "/dev/$name made with mknod in $dir" "$node" $at; else blocked "/dev/$name made with mknod in $dir" "$(cat "$T/mknod-err")"; fi
      rm -f "$dir/probe-$name"
    done
  done

  # Raw disks: the runtime disk (the agent's code) and the root disk under the container's filesystem.
  for dev in /dev/vd* /dev/sd* /dev/nvme*; do
    [ -b "$dev" ] && read_dev "raw disk $dev" "$dev"
  done
  blocks=$(awk '/^Block devices:/ { b = 1; next } b && $2 == "virtblk" { print $1 }' /proc/devices 2>/dev/null)
  nodes=$(awk 'NR > 2 && $1 ~ /^[0-9]+$/ { print $1 ":" $2 }' /proc/partitions 2>/dev/null)
  for major in ${blocks:-254} 253; do
    for minor in 0 16 32; do nodes="$nodes $major:$minor"; done
  done
  for mm in $(echo $nodes | tr ' ' '\n' | sort -u); do
    for dir in $NODE_DIRS; do
      node=$(make_node "$dir/probe-disk" b "${mm%:*}" "${mm#*:}")
      if [ -n "$node" ]; then read_dev "raw disk $mm made with mknod in $dir" "$node"; else blocked "raw disk $mm made with mknod in $dir" "$(cat "$T/mknod-err")"; fi
      rm -f "$dir/probe-disk"
    done
  done
}

# ------------------------------------------------------------------------------- devices and virtio ports
# What Docker puts in a container's /dev (pts entries and a terminal's console are the container's own).
check_devices() {
  extra=
  for f in $(find /dev -path /dev/pts -prune -o \( -type c -o -type b \) -print 2>/dev/null); do
    mm=$(devno "$f")
    case "$f=$mm" in
    /dev/null=1:3 | /dev/zero=1:5 | /dev/full=1:7 | /dev/random=1:8 | /dev/urandom=1:9 | /dev/tty=5:0 | /dev/ptmx=5:2) ;;
    /dev/console=136:*) ;;
    *) extra="$extra $f($mm)" ;;
    esac
  done
  if [ -n "$extra" ]; then reached "/dev" "device nodes beyond Docker's set:$extra"; else blocked "/dev" "only Docker's device nodes"; fi

  major=$(awk '$2 == "virtio-portsdev" { print $1; exit }' /proc/devices 2>/dev/null)
  for dev in /dev/vport* /dev/hvc*; do
    [ -c "$dev" ] && open_port "virtio port $dev" "$dev"
  done
  for fd in /proc/[0-9]*/fd/*; do
    case "$(readlink "$fd" 2>/dev/null)" in /dev/vport* | /dev/hvc*) open_port "virtio port through $fd" "$fd" ;; esac
  done
  for minor in 0 1 2 3; do
    for dir in $NODE_DIRS; do
      node=$(make_node "$dir/probe-vport" c "${major:-245}" $minor)
      if [ -n "$node" ]; then open_port "virtio port ${major:-245}:$minor made with mknod in $dir" "$node"; else blocked "virtio port ${major:-245}:$minor made with mknod in $dir" "$(cat "$T/mknod-err")"; fi
      rm -f "$dir/probe-vport"
    done
  done
  for dir in $NODE_DIRS; do
    node=$(make_node "$dir/probe-hvc" c 229 0)
    if [ -n "$node" ]; then open_port "hvc0 made with mknod in $dir" "$node"; else blocked "hvc0 made with mknod in $dir" "$(cat "$T/mknod-err")"; fi
    rm -f "$dir/probe-hvc"
  done
}

# ----------------------------------------------------------------------------- masked and read-only paths
check_paths() {
  for p in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/latency_stats /proc/timer_stats \
    /proc/acpi /proc/asound /proc/scsi /sys/firmware /sys/devices/virtual/powercap; do
    if [ -d "$p" ]; then
      listing=$(ls -A "$p" 2>/dev/null | tr '\n' ' ')
      if [ -n "$listing" ]; then reached "masked path $p" "lists: $listing"; else blocked "masked path $p" "empty"; fi
    elif [ -c "$p" ]; then
      blocked "masked path $p" "a device node ($(devno "$p")) over it"
    elif [ -e "$p" ]; then
      if head -c 64 "$p" >"$T/out" 2>"$T/err" && [ -s "$T/out" ]; then reached "masked path $p" "readable: $(head -c 40 "$T/out" | od -A n -c | head -n 1)"; else blocked "masked path $p" "$(cat "$T/err")"; fi
    else
      blocked "masked path $p" "absent"
    fi
  done

  # Opened for writing and closed at once: no byte is written to these.
  for p in /proc/sysrq-trigger /proc/sys/kernel/panic /proc/sys/kernel/modprobe /sys/kernel/uevent_helper \
    /sys/kernel/mm/transparent_hugepage/enabled /sys/power/state; do
    [ -e "$p" ] || continue
    if [ -c "$p" ]; then
      blocked "read-only path $p" "a device node ($(devno "$p")) over it"
    elif out=$( (exec 3>>"$p") 2>&1); then
      reached "read-only path $p" "opened for writing"
    else
      blocked "read-only path $p" "$out"
    fi
  done

  # Leaving the container's cgroup: a subshell moves itself to the top of the cgroup tree it sees. Only a
  # move, or a top that is the VM's own root cgroup, is an escape (with a cgroup namespace the top of the
  # tree in view is the container's own cgroup).
  before=$(cat /proc/self/cgroup)
  if out=$(sh -c 'echo $$ > /sys/fs/cgroup/cgroup.procs && cat /proc/self/cgroup' 2>&1); then
    if [ "$out" != "$before" ] || [ "$(readlink /proc/self/ns/cgroup)" = "cgroup:[$INIT_NS_CGROUP]" ]; then
      reached "cgroup escape" "a process wrote itself into /sys/fs/cgroup/cgroup.procs, the VM's root cgroup ($before -> $out)"
    else
      info "cgroup escape" "wrote to /sys/fs/cgroup/cgroup.procs and stayed in $out"
    fi
  else
    blocked "cgroup escape" "$out"
  fi
  # The container's limits: in view perhaps, never writable (opened for writing, nothing written).
  cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
  for f in memory.max pids.max; do
    file=/sys/fs/cgroup${cg%/}/$f
    if [ -e "$file" ]; then
      info "$f" "$file = $(cat "$file")"
      if out=$( (exec 3>>"$file") 2>&1); then
        reached "cgroup limit" "$file can be written: the container could lift its own limit"
      else
        blocked "cgroup limit" "$file: $out"
      fi
    else
      info "$f" "no $file in view"
    fi
  done
}

# ---------------------------------------------------------------------------- mounts, modules, capabilities
try_mount() {
  what=$1 undo=$2
  shift 2
  if out=$(mount "$@" 2>&1); then
    reached "mount $what" "mount $* succeeded"
    [ -n "$undo" ] && umount "$undo" 2>/dev/null
  else
    blocked "mount $what" "$out"
  fi
}

check_privileges() {
  try_mount tmpfs "$T/mnt" -t tmpfs probe "$T/mnt"
  try_mount proc "$T/proc" -t proc proc "$T/proc"
  try_mount devtmpfs "$T/dev" -t devtmpfs devtmpfs "$T/dev"
  try_mount cgroup2 "$T/cg" -t cgroup2 cgroup2 "$T/cg"
  try_mount "bind of /" "$T/mnt" --bind / "$T/mnt"
  try_mount "remount of / read-write" "" -o remount,rw /
  try_mount "remount of /sys read-write" "" -o remount,rw /sys
  try_mount "remount of /proc/sys read-write" "" -o remount,rw /proc/sys
  if grep -q ' /proc/kcore ' /proc/mounts; then
    if out=$(umount /proc/kcore 2>&1); then reached "unmount a mask" "umount /proc/kcore succeeded"; else blocked "unmount a mask" "$out"; fi
  fi

  for ko in $(find / -xdev -name '*.ko' -o -xdev -name '*.ko.xz' 2>/dev/null | head -n 3); do
    if out=$(insmod "$ko" 2>&1); then reached "insmod" "loaded $ko"; else info "insmod" "$ko: $out"; fi
  done
  # The kernel checks CAP_SYS_MODULE before it looks at the bytes: EPERM is the only right answer.
  printf 'not a kernel module\n' >"$T/junk.ko"
  out=$(insmod "$T/junk.ko" 2>&1)
  case "$out" in
  *'not permitted'*) blocked "insmod" "$out" ;;
  *) reached "insmod" "the kernel looked at the module, so CAP_SYS_MODULE is there: ${out:-loaded}" ;;
  esac

  for set in CapEff CapPrm CapBnd; do
    value=$(sed -n "s/^$set:[[:space:]]*//p" /proc/self/status)
    beyond=$((0x$value & ~DOCKER_CAPS))
    if [ "$beyond" != 0 ]; then
      reached "capabilities" "$set $value has capabilities beyond Docker's default set: $(printf '%016x' "$beyond")"
    else
      blocked "capabilities" "$set $value is within Docker's default set"
    fi
  done
}

# --------------------------------------------------------------------------------- forged status records
# The test built these lines with the unauthenticated console format; they claim the main process exited 42.
check_forgery() {
  for dir in $NODE_DIRS; do
    make_node "$dir/probe-console" c 5 1 >/dev/null
    make_node "$dir/probe-ttyS0" c 4 64 >/dev/null
    make_node "$dir/probe-kmsg" c 1 11 >/dev/null
  done
  for dev in /dev/console /dev/ttyS0 /dev/kmsg /dev/tty /dev/hvc0 \
    $T/probe-console $T/probe-ttyS0 $T/probe-kmsg /dev/probe-console /dev/probe-ttyS0 /dev/probe-kmsg; do
    [ -e "$dev" ] || continue
    mm=$(devno "$dev")
    ok=1 err=
    while IFS= read -r line; do
      case "$mm" in
      # The kernel log: <0> makes it an emergency, printed on the console despite `quiet`.
      1:11) out=$( (printf '<0>%s\n' "$line" >"$dev") 2>&1) ;;
      *) out=$( (printf '\n%s\n' "$line" >"$dev") 2>&1) ;;
      esac
      [ -n "$out" ] && ok= err=$out
    done </hostile/forged.lines
    case "$ok:$mm" in
    1:5:1 | 1:4:6[4-7] | 1:1:11 | 1:229:*) reached "forged status record" "written to $dev ($mm), the VM's console or kernel log" ;;
    1:*) info "forged status record" "written to $dev ($mm)" ;;
    *) blocked "forged status record to $dev ($mm)" "$err" ;;
    esac
  done
  cat /hostile/forged.lines
  info "forged status record" "written to stdout (the lines above)"
  rm -f $T/probe-console $T/probe-ttyS0 $T/probe-kmsg /dev/probe-console /dev/probe-ttyS0 /dev/probe-kmsg
}

# ------------------------------------------------------------------------------------ memory and processes
check_memory() {
  info "memory" "$(grep -E '^(MemTotal|MemAvailable)' /proc/meminfo | tr -s ' ')"
  # 1 MB strings, each a fresh copy, until the kernel says no; the hog offers itself to the OOM killer.
  # Without a memory limit the VM thrashes (the agent's pages go and come back) long before the OOM
  # killer acts, so after a minute the hog gets SIGTERM: 143, where the OOM killer's SIGKILL gives 137.
  (
    echo 1000 >/proc/self/oom_score_adj
    exec timeout -s TERM 60 awk 'BEGIN { s = sprintf("%1048576s", ""); for (i = 0; ; i++) a[i] = s i }'
  ) >/dev/null 2>"$T/hog-err"
  status=$?
  case $status in
  137) info "memory hog" "killed by SIGKILL (the OOM killer), exit status 137" ;;
  143) info "memory hog" "still alive after 60 s (no OOM kill; the VM thrashed), ended by SIGTERM" ;;
  *) info "memory hog" "ended with exit status $status: $(head -c 200 "$T/hog-err")" ;;
  esac
  info "memory" "after the hog: $(grep -E '^MemAvailable' /proc/meminfo | tr -s ' ')"
}

check_fork_bomb() {
  set -- /proc/[0-9]*
  before=$#
  # Every bomb process forks for good; a failed fork ends that shell, whose slot another one takes.
  (
    echo 1000 >/proc/self/oom_score_adj
    bomb() { while :; do bomb & done; }
    bomb
  ) >/dev/null 2>&1 &
  most=0
  # Six seconds of it, counted and printed without forking (a glob, builtins only), so that a wedged
  # container still shows how far it got.
  for i in 1 2 3 4 5 6; do
    pause 1
    set -- /proc/[0-9]*
    [ $# -gt $most ] && most=$#
    printf 'INFO fork bomb progress: %s processes in view after %s s\n' $# $i
  done
  # kill -1 spares the probe and PID 1. A SIGKILL sweep alone can lose the race: what it missed refills
  # every free slot before the next one, and a container full of spinning shells starves the whole VM
  # under TCG (a CI run once spent minutes here). So each round first stops them, three sweeps in a row (a
  # stopped shell forks no more, so each sweep leaves only what was forked during the one before), then
  # kills them all, stopped or not; repeated until no more processes are in view than before the bomb.
  # `wait` reaps the bomb's first shell (the probe's child); PID 1 reaps the rest.
  i=0
  while [ $i -lt 30 ]; do
    kill -STOP -1 2>/dev/null
    kill -STOP -1 2>/dev/null
    kill -STOP -1 2>/dev/null
    kill -9 -1 2>/dev/null
    wait
    pause 1
    i=$((i + 1))
    set -- /proc/[0-9]*
    printf 'INFO fork bomb progress: %s processes in view after kill -9 -1 sweep %s\n' $# $i
    [ $# -le $before ] && break
  done
  set -- /proc/[0-9]*
  info "fork bomb" "$before processes in view before it, at most $most during it, $# after the cleanup"
}

check_signals() {
  trap 'info "signal" "the probe got SIGTERM (PID 1 passed it on)"' TERM
  if kill -9 1 2>"$T/err"; then info "kill -9 1" "sent"; else info "kill -9 1" "$(cat "$T/err")"; fi
  pause 2
  if kill -TERM 1 2>"$T/err"; then info "kill -TERM 1" "sent"; else info "kill -TERM 1" "$(cat "$T/err")"; fi
  pause 3
  info "pid 1" "after the signals: $(cat /proc/1/comm 2>&1)"
}

# ------------------------------------------------------------------------------------------------- main
info "probe" "mode $MODE, pid $$, $(id)"
check_identity
check_key
check_devices
check_paths
check_privileges
if [ "$MODE" = full ]; then
  check_forgery
  check_memory
  check_fork_bomb
  check_signals
fi
rm -rf "$T/out" "$T/err" "$T/maps"
echo "PROBE DONE"
[ "$MODE" = full ] || exit 0

# The test checks exec and the host's view now, then asks for the real exit.
while [ ! -e /tmp/probe-finish ]; do pause 1; done
exit 7
