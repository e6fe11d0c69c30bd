/*
 * fake-agent: a stand-in for /tether on the runtime disk until the real agent exists.
 * It proves that stage0 handed over PID 1 with /proc, /sys and /dev in place: it prints its pid
 * and uptime, its argv and the kernel's key=value environment, lists /proc/mounts and the virtio disks;
 * if a disk with serial "test-rootfs" is attached it mounts it read-only on /mnt/root and prints the
 * owner of /home/tester and the mode of /tmp there (checks tar-to-ext4.sh from inside a guest); then
 * it powers off.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv, char **envp)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	printf("fake-agent pid=%d uptime=%.2f\n", (int)getpid(), (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
	for (int i = 0; i < argc; i++)
		printf("fake-agent argv[%d]=%s\n", i, argv[i]);
	for (char **e = envp; *e; e++)
		printf("fake-agent env %s\n", *e);
	FILE *m = fopen("/proc/mounts", "r");
	if (m) {
		char line[512];
		while (fgets(line, sizeof line, m))
			printf("fake-agent mount %s", line);
		fclose(m);
	} else {
		perror("fake-agent: /proc/mounts");
	}
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char path[300], serial[64] = "";
		if (strncmp(e->d_name, "vd", 2) != 0)
			continue;
		snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
		FILE *f = fopen(path, "r");
		if (f) {
			if (!fgets(serial, sizeof serial, f))
				serial[0] = '\0';
			serial[strcspn(serial, "\n")] = '\0';
			fclose(f);
		}
		printf("fake-agent disk /dev/%s serial=%s\n", e->d_name, serial);
		if (strcmp(serial, "test-rootfs") == 0) {
			char dev[300];
			struct stat st;
			snprintf(dev, sizeof dev, "/dev/%s", e->d_name);
			if (mount(dev, "/mnt/root", "ext4", MS_RDONLY, NULL) != 0)
				perror("fake-agent: mount test-rootfs");
			else if (stat("/mnt/root/home/tester", &st) != 0)
				perror("fake-agent: stat /home/tester");
			else {
				printf("fake-agent rootfs /home/tester uid=%u gid=%u\n", (unsigned)st.st_uid, (unsigned)st.st_gid);
				if (stat("/mnt/root/tmp", &st) == 0)
					printf("fake-agent rootfs /tmp mode=%o\n", (unsigned)(st.st_mode & 07777));
			}
		}
	}
	if (d)
		closedir(d);
	printf("fake-agent: root has /init: %s\n", access("/init", F_OK) == 0 ? "yes" : "no");
	printf("fake-agent: powering off\n");
	fflush(stdout);
	sync();
	reboot(RB_POWER_OFF);
	perror("fake-agent: reboot");
	for (;;)
		pause();
}
