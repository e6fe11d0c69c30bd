/*
 * stage0: the /init of Tether's initramfs.
 *
 * It does the least that the agent cannot do for itself: load the virtio modules for this machine's
 * transport, find the read-only runtime disk by its virtio serial, mount it, switch the root to it
 * (as switch_root does) and exec /tether, which then runs as PID 1.
 *
 *   mount devtmpfs /dev, /proc, /sys
 *   transport = tether.transport=pci|mmio on the kernel command line, else probe /sys/bus/pci
 *   finit_module virtio virtio_ring <transport modules> virtio_blk
 *   wait (bounded) for /sys/block/vd* whose serial is "tether-runtime"
 *   mount it ro (ext4) on /runtime, move /proc /sys /dev under it, mount a tmpfs on its /run
 *   delete the initramfs files, chdir /runtime, mount --move . /, chroot .
 *   exec /tether with our argv and environment
 *
 * PID 1 must never exit (the kernel panics): every failure prints the step and errno on the console
 * and powers the VM off.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define RUNTIME_SERIAL "tether-runtime"
#define RUNTIME_DIR "/runtime"
#define AGENT "/tether"
#define DISK_WAIT_MS 10000
#define POLL_MS 5

#ifndef RAMFS_MAGIC
#define RAMFS_MAGIC 0x858458f6
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

static double uptime(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	/* stdout is the console when the kernel could open /dev/console; ignore short writes, nothing to do about them. */
	ssize_t w = write(STDOUT_FILENO, buf, (size_t)n);
	(void)w;
}

/* Report a failed step, also to the kernel log (in case the console fds are missing), then power off. */
static void __attribute__((noreturn)) fail(const char *step, int err)
{
	char msg[512];
	snprintf(msg, sizeof msg, "stage0: FAILED: %s: %s (errno %d); powering off", step, strerror(err), err);
	say("%s", msg);
	int k = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
	if (k >= 0) {
		ssize_t w = write(k, msg, strlen(msg));
		(void)w;
		close(k);
	}
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause(); /* reboot() failed: never return, PID 1 exiting panics the kernel */
}

static void failf(int err, const char *fmt, ...)
{
	char step[384];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(step, sizeof step, fmt, ap);
	va_end(ap);
	fail(step, err);
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, NULL) != 0)
		failf(errno, "mount %s on %s (%s)", src, dst, type ? type : "move");
}

/* Read a small sysfs/proc file into buf without its trailing newline; returns 0 on success. */
static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

/* Value of KEY=... on the kernel command line. Dotted keys are not passed to init's environment. */
static const char *cmdline_value(const char *cmdline, const char *key, char *out, size_t len)
{
	size_t klen = strlen(key);
	const char *p = cmdline;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *end = strchr(p, ' ');
		if (!end)
			end = p + strlen(p);
		if ((size_t)(end - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
			size_t vlen = (size_t)(end - p) - klen - 1;
			if (vlen >= len)
				vlen = len - 1;
			memcpy(out, p + klen + 1, vlen);
			out[vlen] = '\0';
			return out;
		}
		p = end;
	}
	return NULL;
}

/* pc/q35 expose virtio devices on PCI (vendor 0x1af4); microvm has no PCI bus and uses virtio-mmio. */
static int has_virtio_pci(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	if (!d)
		return 0;
	struct dirent *e;
	int found = 0;
	while (!found && (e = readdir(d))) {
		char path[300], vendor[16];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (read_file(path, vendor, sizeof vendor) == 0 && strcmp(vendor, "0x1af4") == 0)
			found = 1;
	}
	closedir(d);
	return found;
}

static void load_module(const char *release, const char *name)
{
	char path[256];
	snprintf(path, sizeof path, "/lib/modules/%s/%s.ko", release, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT) {
			/* The build leaves out modules that this kernel has built in. */
			return;
		}
		failf(errno, "open module %s", path);
	}
	if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
		failf(errno, "load module %s (finit_module)", path);
	close(fd);
}

/* Find /dev/vdX whose virtio serial is RUNTIME_SERIAL and whose node devtmpfs has created. */
static int find_runtime_disk(char *dev, size_t len)
{
	DIR *d = opendir("/sys/block");
	if (!d)
		return 0;
	struct dirent *e;
	int found = 0;
	while (!found && (e = readdir(d))) {
		char path[300], serial[64];
		if (strncmp(e->d_name, "vd", 2) != 0)
			continue;
		snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
		if (read_file(path, serial, sizeof serial) != 0 || strcmp(serial, RUNTIME_SERIAL) != 0)
			continue;
		snprintf(dev, len, "/dev/%s", e->d_name);
		found = access(dev, F_OK) == 0;
	}
	closedir(d);
	return found;
}

/* Delete everything on the initramfs (device rootdev) below dirfd, without crossing into other mounts. */
static void remove_tree(int dirfd, dev_t rootdev)
{
	DIR *d = fdopendir(dirfd);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		struct stat st;
		if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != rootdev)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0)
				remove_tree(sub, rootdev); /* closes sub */
			if (strcmp(e->d_name, RUNTIME_DIR + 1) != 0)
				unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
		} else {
			unlinkat(dirfd, e->d_name, 0);
		}
	}
	closedir(d);
}

int main(int argc, char **argv, char **envp)
{
	(void)argc;
	double t0 = uptime();

	/* CONFIG_DEVTMPFS_MOUNT is off in Debian's cloud kernel: mount it ourselves. */
	do_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID);
	if (fcntl(STDOUT_FILENO, F_GETFD) < 0) {
		/* The kernel found no /dev/console in the initramfs: open it now, for us and for the agent. */
		int fd = open("/dev/console", O_RDWR);
		if (fd >= 0) {
			for (int i = 0; i < 3; i++)
				if (fd != i)
					dup2(fd, i);
			if (fd > 2)
				close(fd);
		}
	}
	say("stage0: started at uptime %.2f s", t0);
	do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC);
	do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC);

	struct utsname uts;
	if (uname(&uts) != 0)
		fail("uname", errno);

	char cmdline[4096] = "", transport[16];
	const char *how = "tether.transport";
	read_file("/proc/cmdline", cmdline, sizeof cmdline);
	if (!cmdline_value(cmdline, "tether.transport", transport, sizeof transport)) {
		int pci = has_virtio_pci();
		strcpy(transport, pci ? "pci" : "mmio");
		how = pci ? "found a virtio PCI device" : "no virtio PCI device";
	}

	load_module(uts.release, "virtio");
	load_module(uts.release, "virtio_ring");
	if (strcmp(transport, "pci") == 0) {
		load_module(uts.release, "virtio_pci_legacy_dev");
		load_module(uts.release, "virtio_pci_modern_dev");
		load_module(uts.release, "virtio_pci");
	} else if (strcmp(transport, "mmio") == 0) {
		load_module(uts.release, "virtio_mmio");
	} else {
		failf(EINVAL, "kernel command line tether.transport=%s (expected pci or mmio)", transport);
	}
	load_module(uts.release, "virtio_blk");

	char dev[300];
	double deadline = uptime() + DISK_WAIT_MS / 1000.0;
	while (!find_runtime_disk(dev, sizeof dev)) {
		if (uptime() > deadline)
			failf(ENODEV, "no virtio disk with serial '%s' after %d s (transport %s: %s; attach the runtime disk "
			      "with -device virtio-blk-%s,serial=%s)",
			      RUNTIME_SERIAL, DISK_WAIT_MS / 1000, transport, how,
			      strcmp(transport, "pci") == 0 ? "pci" : "device", RUNTIME_SERIAL);
		struct timespec ts = { 0, POLL_MS * 1000000L };
		nanosleep(&ts, NULL);
	}
	do_mount(dev, RUNTIME_DIR, "ext4", MS_RDONLY | MS_NODEV);
	if (access(RUNTIME_DIR AGENT, X_OK) != 0)
		failf(errno, "runtime disk %s has no executable %s", dev, AGENT);

	do_mount("/dev", RUNTIME_DIR "/dev", NULL, MS_MOVE);
	do_mount("/proc", RUNTIME_DIR "/proc", NULL, MS_MOVE);
	do_mount("/sys", RUNTIME_DIR "/sys", NULL, MS_MOVE);
	/* The runtime disk is read-only, and the agent writes before its main runs (the single executable
	 * extracts its native addons into /run at module load), so it gets a writable /run from the start. */
	if (mount("tmpfs", RUNTIME_DIR "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64m") != 0)
		failf(errno, "mount tmpfs on %s/run", RUNTIME_DIR);

	/* switch_root: free the initramfs (only if it really is one), then make the runtime disk the root. */
	struct statfs sfs;
	struct stat rootst;
	if (statfs("/", &sfs) != 0 || stat("/", &rootst) != 0)
		fail("stat /", errno);
	if ((unsigned long)sfs.f_type == RAMFS_MAGIC || (unsigned long)sfs.f_type == TMPFS_MAGIC) {
		int rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (rootfd >= 0)
			remove_tree(rootfd, rootst.st_dev);
	}
	if (chdir(RUNTIME_DIR) != 0)
		fail("chdir " RUNTIME_DIR, errno);
	if (mount(".", "/", NULL, MS_MOVE, NULL) != 0)
		fail("mount --move " RUNTIME_DIR " /", errno);
	if (chroot(".") != 0)
		fail("chroot " RUNTIME_DIR, errno);
	if (chdir("/") != 0)
		fail("chdir / after chroot", errno);

	say("stage0: runtime %s mounted in %.2f s (transport %s), starting %s at uptime %.2f s", dev, uptime() - t0,
	    transport, AGENT, uptime());
	/* The agent reports where boot time went, stage0 included. (Its serial ports are waited on in the event
	 * loop, holding no libuv pool thread, so libuv's default pool of 4 is enough: no UV_THREADPOOL_SIZE.) */
	static char start_env[48], exec_env[48];
	snprintf(start_env, sizeof start_env, "TETHER_STAGE0_START_MS=%.0f", t0 * 1000);
	snprintf(exec_env, sizeof exec_env, "TETHER_STAGE0_EXEC_MS=%.0f", uptime() * 1000);
	size_t envc = 0;
	while (envp[envc] != NULL)
		envc++;
	char **env = calloc(envc + 3, sizeof *env);
	if (env == NULL)
		fail("calloc env", ENOMEM);
	memcpy(env, envp, envc * sizeof *env);
	env[envc] = start_env;
	env[envc + 1] = exec_env;
	execve(AGENT, argv, env);
	fail("exec " AGENT, errno);
}
