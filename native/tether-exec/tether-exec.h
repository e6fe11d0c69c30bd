/*
 * tether-exec: the last step between the agent and a container process. See main.c for the usage.
 * The parts, one job each: main.c (options, identity, command lookup), container.c (namespaces, cgroup,
 * the container's /dev, /proc and /sys), caps.c (Docker's default capability set), init.c (the small init
 * that reaps and forwards signals, and the relay that hands an exit status back to the agent).
 */
#ifndef TETHER_EXEC_H
#define TETHER_EXEC_H

#include <stdbool.h>
#include <sys/types.h>

#define EXIT_CANNOT_RUN 126
#define EXIT_NOT_FOUND 127

/* The agent asks for "SIGKILL the process" with this real-time signal, since SIGKILL itself cannot be
 * caught and forwarded: a helper killed outright would orphan what it runs onto PID 1. */
#define FORWARD_SIGKILL 64

struct options {
  long uid, gid;
  const char *groups;
  const char *cwd;
  bool init;               /* a small init runs the command as its child (docker run --init) */
  bool new_container;      /* create the container's namespaces and its view of /dev, /proc, /sys */
  long join_pid;           /* > 0: join the namespaces of the container whose helper has this pid */
  const char *cgroup;      /* the container's cgroup directory, as the agent sees it */
  bool tty;                /* stdin is the session's terminal */
  const char *masks[16];   /* extra paths to mask in the container (e.g. /proc/cmdline) */
  int mask_count;
  char **argv;
};

__attribute__((noreturn, format(printf, 2, 3))) void die(int code, const char *fmt, ...);
__attribute__((format(printf, 1, 2))) void warn_msg(const char *fmt, ...);

/* container.c */
void enter_new_container(const struct options *options);
void set_up_container_view(const struct options *options);
void join_container_before_fork(const struct options *options, int *cgroup_procs_fd);
void join_container_after_fork(void);
void move_to_cgroup(int cgroup_procs_fd, pid_t pid);

/* caps.c */
void drop_to_default_capabilities(void);

/* init.c */
__attribute__((noreturn)) void run_parent_relay(pid_t child, int status_read_fd, bool signal_group, bool child_is_init);
__attribute__((noreturn)) void run_init(const struct options *options, int status_write_fd);
void block_all_signals(void);
void restore_signals(void);

/* main.c */
__attribute__((noreturn)) void become_command(const struct options *options);

#endif
