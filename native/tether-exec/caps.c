/*
 * Docker's default capability set for the container, nothing more: every other capability leaves the
 * bounding set (so no process of the container can gain it back, even through a file capability or a
 * setuid binary) and the effective and permitted sets. Without CAP_SYS_ADMIN, CAP_SYS_MODULE and
 * CAP_SYS_RAWIO the container can neither mount, load modules, nor reach I/O ports and raw memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tether-exec.h"

#define CAP(n) (1ULL << (n))
/* chown dac_override fowner fsetid kill setgid setuid setpcap net_bind_service net_raw sys_chroot mknod
 * audit_write setfcap: 0xa80425fb, the CapEff of a root process under Docker. */
static const unsigned long long DEFAULT_CAPS = CAP(CAP_CHOWN) | CAP(CAP_DAC_OVERRIDE) | CAP(CAP_FOWNER) |
    CAP(CAP_FSETID) | CAP(CAP_KILL) | CAP(CAP_SETGID) | CAP(CAP_SETUID) | CAP(CAP_SETPCAP) |
    CAP(CAP_NET_BIND_SERVICE) | CAP(CAP_NET_RAW) | CAP(CAP_SYS_CHROOT) | CAP(CAP_MKNOD) |
    CAP(CAP_AUDIT_WRITE) | CAP(CAP_SETFCAP);

static int last_capability(void) {
  FILE *file = fopen("/proc/sys/kernel/cap_last_cap", "re");
  int last = 63;
  if (file != NULL) {
    if (fscanf(file, "%d", &last) != 1) last = 63;
    fclose(file);
  }
  return last;
}

void drop_to_default_capabilities(void) {
  int last = last_capability();
  for (int cap = 0; cap <= last; cap++) {
    if (DEFAULT_CAPS & CAP(cap)) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
      die(EXIT_CANNOT_RUN, "cannot drop capability %d: %s", cap, strerror(errno));
  }
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  data[0].effective = data[0].permitted = (unsigned)(DEFAULT_CAPS & 0xffffffffULL);
  data[1].effective = data[1].permitted = (unsigned)(DEFAULT_CAPS >> 32);
  if (syscall(SYS_capset, &header, data) != 0) die(EXIT_CANNOT_RUN, "cannot set the container's capabilities: %s", strerror(errno));
}
