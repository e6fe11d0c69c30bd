/*
 * The container's walls inside the VM: namespaces of its own (mount, PID, IPC, UTS, cgroup), its cgroup
 * (the limits the agent set), and the view Docker gives a container: a minimal /dev, its own /proc with
 * Docker's masked and read-only paths, /sys read-only with /sys/firmware masked (QEMU's fw_cfg holds the
 * agent's config and keys), and every mount nodev, so a device node the container makes (it keeps
 * CAP_MKNOD, as under Docker) opens nothing. The agent, its ports, its /proc entry and its files stay
 * outside: the old /dev, /proc and /sys are detached, never merely covered.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tether-exec.h"

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

#define NAMESPACES (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)

/* Docker's defaults (moby oci/defaults.go). */
static const char *const MASKED_PATHS[] = {
    "/proc/asound",       "/proc/acpi",        "/proc/interrupts", "/proc/kcore",
    "/proc/keys",         "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug",  "/proc/scsi",        "/sys/firmware",    "/sys/devices/virtual/powercap",
};
/* /proc/sys last: its read-only mount is the sign, for exec sessions, that the container's view is complete. */
static const char *const READONLY_PATHS[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sysrq-trigger", "/proc/sys",
};
#define READY_MOUNT_POINT "/proc/sys"
#define READY_WAIT_MS 10000
static const char *const DEVICES[] = {"null", "zero", "full", "random", "urandom", "tty"};
#define DEVICE_COUNT (sizeof DEVICES / sizeof DEVICES[0])

static void must(int result, const char *what, const char *path) {
  if (result != 0) die(EXIT_CANNOT_RUN, "cannot set up the container: %s %s: %s", what, path, strerror(errno));
}

static void write_pid(int fd, pid_t pid, const char *where) {
  char text[24];
  int length = snprintf(text, sizeof text, "%d", (int)pid);
  if (write(fd, text, (size_t)length) != length)
    die(EXIT_CANNOT_RUN, "cannot join the container's cgroup %s: %s", where, strerror(errno));
}

static int open_cgroup_procs(const char *cgroup) {
  char path[4096];
  snprintf(path, sizeof path, "%s/cgroup.procs", cgroup);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die(EXIT_CANNOT_RUN, "cannot open the container's cgroup %s: %s", path, strerror(errno));
  return fd;
}

void move_to_cgroup(int cgroup_procs_fd, pid_t pid) {
  write_pid(cgroup_procs_fd, pid, "(cgroup.procs)");
}

void enter_new_container(const struct options *options) {
  /* Into the cgroup before the cgroup namespace, so the container sees its own cgroup as the root. */
  if (options->cgroup != NULL) {
    int fd = open_cgroup_procs(options->cgroup);
    write_pid(fd, getpid(), options->cgroup);
    close(fd);
  }
  if (unshare(NAMESPACES) != 0) die(EXIT_CANNOT_RUN, "cannot create the container's namespaces: %s", strerror(errno));
}

/* The namespaces of the container, by the files of its main helper (which made them). */
static const struct {
  const char *name;
  int type;
} JOINED[] = {
    {"cgroup", CLONE_NEWCGROUP}, {"ipc", CLONE_NEWIPC}, {"uts", CLONE_NEWUTS}, {"mnt", CLONE_NEWNS},
};
#define JOINED_COUNT (sizeof JOINED / sizeof JOINED[0])
static int joined_fds[JOINED_COUNT];

/* Whether the mount namespace of `pid` shows the container's view whole (its last mount is in place). */
static bool container_view_ready(long pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/mountinfo", pid);
  FILE *mountinfo = fopen(path, "re");
  if (mountinfo == NULL) die(EXIT_CANNOT_RUN, "the container is not running (%s: %s)", path, strerror(errno));
  char line[4096];
  bool ready = false;
  while (!ready && fgets(line, sizeof line, mountinfo)) {
    char point[1024], options[512];
    if (sscanf(line, "%*d %*d %*s %*s %1023s %511s", point, options) != 2) continue;
    ready = strcmp(point, READY_MOUNT_POINT) == 0 && strncmp(options, "ro", 2) == 0;
  }
  fclose(mountinfo);
  return ready;
}

/*
 * An exec that arrives while the main process is still making the container must not join the agent's
 * own namespaces or a half-built view: it waits for the view to be whole.
 */
static void wait_for_container(long pid) {
  for (int waited = 0; !container_view_ready(pid); waited += 10) {
    if (waited >= READY_WAIT_MS) die(EXIT_CANNOT_RUN, "the container did not finish starting within %d s", READY_WAIT_MS / 1000);
    usleep(10 * 1000);
  }
}

void join_container_before_fork(const struct options *options, int *cgroup_procs_fd) {
  wait_for_container(options->join_pid);
  char path[64];
  for (size_t i = 0; i < JOINED_COUNT; i++) {
    snprintf(path, sizeof path, "/proc/%ld/ns/%s", options->join_pid, JOINED[i].name);
    joined_fds[i] = open(path, O_RDONLY | O_CLOEXEC);
    if (joined_fds[i] < 0) die(EXIT_CANNOT_RUN, "the container is not running (%s: %s)", path, strerror(errno));
  }
  snprintf(path, sizeof path, "/proc/%ld/ns/pid_for_children", options->join_pid);
  int pid_fd = open(path, O_RDONLY | O_CLOEXEC);
  if (pid_fd < 0) die(EXIT_CANNOT_RUN, "the container is not running (%s: %s)", path, strerror(errno));
  /* Only this process's children enter a PID namespace; the cgroup move happens from out here, where
   * the whole hierarchy is in view (a process inside the cgroup namespace could not name the source). */
  if (setns(pid_fd, CLONE_NEWPID) != 0) die(EXIT_CANNOT_RUN, "cannot join the container's PID namespace: %s", strerror(errno));
  close(pid_fd);
  if (options->cgroup != NULL) *cgroup_procs_fd = open_cgroup_procs(options->cgroup);
}

void join_container_after_fork(void) {
  for (size_t i = 0; i < JOINED_COUNT; i++) {
    if (setns(joined_fds[i], JOINED[i].type) != 0)
      die(EXIT_CANNOT_RUN, "cannot join the container's %s namespace: %s", JOINED[i].name, strerror(errno));
    close(joined_fds[i]);
  }
  if (chdir("/") != 0) die(EXIT_CANNOT_RUN, "chdir /: %s", strerror(errno));
}

/* A mount's per-mount flags from its mountinfo options ("rw,nosuid,relatime"): a bind remount must
 * restate them or it clears them. */
static unsigned long mount_flags(const char *options) {
  unsigned long flags = 0;
  char copy[512];
  snprintf(copy, sizeof copy, "%s", options);
  for (char *save = NULL, *word = strtok_r(copy, ",", &save); word; word = strtok_r(NULL, ",", &save)) {
    if (strcmp(word, "ro") == 0) flags |= MS_RDONLY;
    else if (strcmp(word, "nosuid") == 0) flags |= MS_NOSUID;
    else if (strcmp(word, "nodev") == 0) flags |= MS_NODEV;
    else if (strcmp(word, "noexec") == 0) flags |= MS_NOEXEC;
    else if (strcmp(word, "noatime") == 0) flags |= MS_NOATIME;
    else if (strcmp(word, "nodiratime") == 0) flags |= MS_NODIRATIME;
    else if (strcmp(word, "relatime") == 0) flags |= MS_RELATIME;
  }
  return flags;
}

static bool under(const char *path, const char *top) {
  size_t length = strlen(top);
  return strncmp(path, top, length) == 0 && (path[length] == '\0' || path[length] == '/');
}

/* Every mount the container keeps (its root, volumes, /run) becomes nodev; /dev, /proc, /sys are replaced. */
static void remount_all_nodev(void) {
  FILE *mountinfo = fopen("/proc/self/mountinfo", "re");
  if (mountinfo == NULL) die(EXIT_CANNOT_RUN, "cannot set up the container: /proc/self/mountinfo: %s", strerror(errno));
  char line[4096];
  while (fgets(line, sizeof line, mountinfo)) {
    /* id parent major:minor root mount-point options ... */
    char point[1024], options[512];
    if (sscanf(line, "%*d %*d %*s %*s %1023s %511s", point, options) != 2) continue;
    if (under(point, "/proc") || under(point, "/sys") || under(point, "/dev")) continue;
    unsigned long flags = mount_flags(options);
    if (flags & MS_NODEV) continue;
    /* Octal escapes (\040 for a space) are rare in these paths; such a mount is reported, not skipped. */
    must(mount(NULL, point, NULL, MS_REMOUNT | MS_BIND | MS_NODEV | flags, NULL), "remount nodev", point);
  }
  fclose(mountinfo);
}

static int clone_mount(const char *path) {
  int fd = (int)syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (fd < 0) die(EXIT_CANNOT_RUN, "cannot set up the container: open_tree %s: %s", path, strerror(errno));
  return fd;
}

static void attach_mount(int fd, const char *target) {
  must((int)syscall(SYS_move_mount, fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH), "move_mount", target);
  close(fd);
}

static void touch(const char *path) {
  int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) die(EXIT_CANNOT_RUN, "cannot set up the container: create %s: %s", path, strerror(errno));
  close(fd);
}

/*
 * A tmpfs /dev (nodev) holding bind mounts of the agent's own device nodes, which keep working because a
 * bind mount carries its own flags: the same devices Docker gives, and nothing of the VM's disks, ports,
 * memory or console. /dev/pts is the agent's, whose terminals are the container's sessions.
 */
static void make_dev(bool tty) {
  int devices[DEVICE_COUNT];
  for (size_t i = 0; i < DEVICE_COUNT; i++) {
    char path[64];
    snprintf(path, sizeof path, "/dev/%s", DEVICES[i]);
    devices[i] = clone_mount(path);
  }
  int pts = clone_mount("/dev/pts");
  int console = -1;
  if (tty) {
    const char *terminal = ttyname(STDIN_FILENO);
    if (terminal != NULL) console = clone_mount(terminal);
  }
  must(umount2("/dev", MNT_DETACH), "detach", "/dev");
  must(mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME, "mode=755,size=65536k"), "mount", "/dev");
  for (size_t i = 0; i < DEVICE_COUNT; i++) {
    char path[64];
    snprintf(path, sizeof path, "/dev/%s", DEVICES[i]);
    touch(path);
    attach_mount(devices[i], path);
  }
  if (console >= 0) {
    touch("/dev/console");
    attach_mount(console, "/dev/console");
  }
  must(mkdir("/dev/pts", 0755), "mkdir", "/dev/pts");
  attach_mount(pts, "/dev/pts");
  must(mkdir("/dev/shm", 01777), "mkdir", "/dev/shm");
  must(mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k"), "mount", "/dev/shm");
  must(mkdir("/dev/mqueue", 0755), "mkdir", "/dev/mqueue");
  must(mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount", "/dev/mqueue");
  static const char *const LINKS[][2] = {
      {"pts/ptmx", "/dev/ptmx"},        {"/proc/self/fd", "/dev/fd"},      {"/proc/self/fd/0", "/dev/stdin"},
      {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}, {"/proc/kcore", "/dev/core"},
  };
  for (size_t i = 0; i < sizeof LINKS / sizeof LINKS[0]; i++) must(symlink(LINKS[i][0], LINKS[i][1]), "symlink", LINKS[i][1]);
}

static void make_proc(void) {
  must(umount2("/proc", MNT_DETACH), "detach", "/proc");
  must(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount", "/proc");
}

static void make_sys(void) {
  must(umount2("/sys", MNT_DETACH), "detach", "/sys");
  unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  must(mount("sysfs", "/sys", "sysfs", flags, NULL), "mount", "/sys");
  /* The cgroup namespace's view: the container's own cgroup as the root, read-only as Docker mounts it. */
  if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags, NULL) != 0)
    warn_msg("no /sys/fs/cgroup in the container: %s", strerror(errno));
}

static void mask(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return; /* not in this kernel */
  if (S_ISDIR(st.st_mode)) must(mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0"), "mask", path);
  else must(mount("/dev/null", path, NULL, MS_BIND, NULL), "mask", path);
}

static void make_read_only(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  must(mount(path, path, NULL, MS_BIND | MS_REC, NULL), "bind", path);
  must(mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "read-only", path);
}

void set_up_container_view(const struct options *options) {
  /* Nothing done in here may reach the agent's mounts, and nothing the agent mounts later reaches in. */
  must(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make private", "/");
  remount_all_nodev();
  make_dev(options->tty);
  make_proc();
  make_sys();
  for (size_t i = 0; i < sizeof MASKED_PATHS / sizeof MASKED_PATHS[0]; i++) mask(MASKED_PATHS[i]);
  for (int i = 0; i < options->mask_count; i++) mask(options->masks[i]);
  for (size_t i = 0; i < sizeof READONLY_PATHS / sizeof READONLY_PATHS[0]; i++) make_read_only(READONLY_PATHS[i]);
  if (chdir("/") != 0) die(EXIT_CANNOT_RUN, "chdir /: %s", strerror(errno));
}
