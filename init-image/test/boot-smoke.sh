#!/usr/bin/env bash
# Boot smoke test of the boot image: kernel + initramfs (stage0) + runtime disk with the fake agent
# (init-image/test/fake-agent.c) + the busybox test root filesystem disk, under QEMU (TCG), on -M pc and
# -M microvm. Checks that the fake agent ran as PID 1 from the read-only runtime disk, that the initramfs
# was freed, that the busybox disk has /home/tester owned by 1000:1000, and that the VM powered off
# (QEMU exit status 0). Prints QEMU start -> fake agent line times per run.
# Usage: boot-smoke.sh [-n RUNS] [MACHINE...]      MACHINE: pc (default), microvm, q35
# Inputs (override with env): KERNEL INITRD RUNTIME ROOTFS; defaults under build/ (make image-smoke builds them).
# TETHER_QEMU_ACCEL (default tcg: nested KVM hangs on our CI machines), SMOKE_TIMEOUT (default 60 s per boot).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

runs=1
while getopts n: opt; do
	case $opt in
	n) runs=$OPTARG ;;
	*) die "usage: $0 [-n RUNS] [pc|microvm|q35]..." ;;
	esac
done
shift $((OPTIND - 1))
machines=("${@:-pc}")
kernel=${KERNEL:-$REPO_DIR/build/image/vmlinuz}
initrd=${INITRD:-$REPO_DIR/build/image/initramfs.cpio.gz}
runtime=${RUNTIME:-$REPO_DIR/build/test/runtime-fake.img}
rootfs=${ROOTFS:-$REPO_DIR/build/image/busybox.img}
accel=${TETHER_QEMU_ACCEL:-tcg}
limit=${SMOKE_TIMEOUT:-60}
need qemu-system-x86_64 qemu-system-x86
for f in "$kernel" "$initrd" "$runtime" "$rootfs"; do
	[ -f "$f" ] || die "'$f' not found: run 'make image-smoke' (or 'make image build/test/runtime-fake.img') first"
done
# microvm has no HPET/PM timer: under TCG the PIT calibration of the TSC sometimes fails and boot hangs.
# Telling the kernel the TSC frequency (the host's, as TCG passes the host TSC through) avoids that.
tsc_khz=$(awk -F: '/cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)

logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
failed=0
declare -A times=()

boot() { # MACHINE RUN
	local machine=$1 run=$2 blk append log=$logdir/$1-$2.log start now line t_agent="" rc=""
	append="console=ttyS0 quiet panic=-1 smoke=$machine-$run"
	case $machine in
	pc | q35) blk=virtio-blk-pci ;;
	microvm) blk=virtio-blk-device append+=" tsc_early_khz=$tsc_khz" ;;
	*) die "unknown machine '$machine' (pc, q35 or microvm)" ;;
	esac
	start=$EPOCHREALTIME
	while IFS= read -r line; do
		now=$EPOCHREALTIME
		line=${line%$'\r'}
		case $line in
		*"fake-agent pid="*) t_agent=$now ;;
		"SMOKE-QEMU-EXIT "*) rc=${line#SMOKE-QEMU-EXIT } && break ;;
		esac
		printf '%s\n' "$line" >>"$log"
	done < <(
		timeout "$limit" qemu-system-x86_64 -accel "$accel" -M "$machine" -m 256 -smp 1 \
			-nodefaults -no-user-config -display none -no-reboot -serial stdio \
			-kernel "$kernel" -initrd "$initrd" -append "$append" \
			-drive "file=$runtime,if=none,id=runtime,format=raw,readonly=on" \
			-device "$blk,drive=runtime,serial=tether-runtime" \
			-drive "file=$rootfs,if=none,id=rootfs,format=raw,readonly=on" \
			-device "$blk,drive=rootfs,serial=test-rootfs" </dev/null 2>&1
		echo "SMOKE-QEMU-EXIT $?"
	)
	local problems=()
	[ "$rc" = 0 ] || problems+=("QEMU exit status ${rc:-unknown} (124 = killed after ${limit} s: the guest hung)")
	grep -q '^fake-agent pid=1 ' "$log" || problems+=("no 'fake-agent pid=1' line: the agent did not run as PID 1")
	grep -q '^stage0: runtime .* mounted' "$log" || problems+=("no stage0 'runtime mounted' line")
	grep -q '^fake-agent mount /dev/vd[a-z]* / ext4 ro' "$log" || problems+=("/ is not the read-only runtime disk")
	grep -q '^fake-agent: root has /init: no' "$log" || problems+=("the initramfs was not freed (/init still there)")
	grep -q "^fake-agent mount tmpfs /run tmpfs rw" "$log" || problems+=("stage0 did not mount a writable tmpfs on /run")
	grep -q '^fake-agent env smoke='"$machine-$run"'$' "$log" || problems+=("kernel key=value args did not reach the agent's environment")
	grep -q '^fake-agent rootfs /home/tester uid=1000 gid=1000$' "$log" || problems+=("busybox disk: /home/tester is not 1000:1000")
	grep -q '^fake-agent rootfs /tmp mode=1777$' "$log" || problems+=("busybox disk: /tmp is not mode 1777")
	grep -q 'reboot: Power down' "$log" || problems+=("no 'reboot: Power down': the VM did not power off")
	if [ ${#problems[@]} -gt 0 ]; then
		printf 'FAIL %s run %s:\n' "$machine" "$run"
		printf '  - %s\n' "${problems[@]}"
		echo "  console (last 25 lines):"
		tail -n 25 "$log" | sed 's/^/    | /'
		failed=1
		return
	fi
	local agent_s uptime stage0
	agent_s=$(awk -v a="$t_agent" -v s="$start" 'BEGIN {printf "%.2f", a - s}')
	uptime=$(sed -n 's/^fake-agent pid=1 uptime=\([0-9.]*\).*/\1/p' "$log")
	stage0=$(sed -n 's/^stage0: runtime .* mounted in \([0-9.]*\) s.*/\1/p' "$log")
	printf 'ok   %-7s run %s: QEMU start -> fake agent %s s (guest uptime %s s, stage0 %s s), exit %s after %.2f s\n' \
		"$machine" "$run" "$agent_s" "$uptime" "$stage0" "$rc" "$(awk -v e="$EPOCHREALTIME" -v s="$start" 'BEGIN {print e - s}')"
	times[$machine]+="$agent_s "
}

for machine in "${machines[@]}"; do
	for run in $(seq 1 "$runs"); do boot "$machine" "$run"; done
done
for machine in "${machines[@]}"; do
	[ -n "${times[$machine]:-}" ] || continue
	printf '%s' "${times[$machine]}" | tr ' ' '\n' | sort -n | awk -v m="$machine" 'NF {t[++n] = $1}
		END {printf "%-7s QEMU start -> fake agent (s): min %.2f  median %.2f  max %.2f  (%d runs)\n", m, t[1], t[int((n + 1) / 2)], t[n], n}'
done
[ "$failed" = 0 ] || die "boot smoke test failed (see above)"
echo "boot smoke test passed"
