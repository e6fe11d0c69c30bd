/*
 * tether-exec: the last step between the agent and a container process.
 *
 * The agent spawns every session (main process and exec) through this helper, because Node cannot set
 * supplementary groups (libuv drops them), cannot create namespaces, and reports a missing command as a
 * spawn error rather than as the exit codes users expect. Failures are reported as Docker reports them: a
 * message on stderr and exit 126 (cannot run) or 127 (not found).
 *
 * usage: tether-exec [--uid N] [--gid N] [--groups G1,G2,...] [--cwd DIR]
 *                    [--new-container | --join PID] [--cgroup DIR] [--mask PATH]... [--init] [--tty] -- ARGV...
 *
 *   (no container option)  set identity and cwd, look the command up in PATH, exec it in place.
 *   --new-container        the container's main process: mount, PID, IPC, UTS and cgroup namespaces of its
 *                          own, a minimal /dev, its own /proc with Docker's masked paths, /sys read-only
 *                          with /sys/firmware masked, every mount nodev, Docker's default capabilities.
 *   --join PID             an exec session: joins the namespaces of the container whose main helper is PID.
 *   --cgroup DIR           the container's cgroup (its limits): the process is moved into it.
 *   --init                 a small init (as `docker run --init`) runs the command as its child: it reaps
 *                          every orphan, forwards signals, and reports the command's exit.
 *   --tty                  stdin is the session's terminal: the command gets its own foreground process
 *                          group, and forwarded signals reach that whole group.
 *
 * With any of the first three, this process stays outside as the agent's child: it forwards the signals
 * the agent sends (FORWARD_SIGKILL for SIGKILL) and exits as the command did, so the agent sees the
 * command's exit code or signal. Static, so it runs in any root filesystem whatever its libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tether-exec.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_GROUPS 256

static void report(const char *fmt, va_list args) {
  fputs("tether: ", stderr);
  vfprintf(stderr, fmt, args);
  fputc('\n', stderr);
}

void die(int code, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  report(fmt, args);
  va_end(args);
  exit(code);
}

void warn_msg(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  report(fmt, args);
  va_end(args);
}

static long parse_id(const char *flag, const char *text) {
  char *end = NULL;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno || *text == '\0' || *end != '\0' || value < 0 || value > 0xfffffffeL)
    die(EXIT_CANNOT_RUN, "bad %s value %s", flag, text);
  return value;
}

static int is_executable_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Runs argv[0] from PATH as execvp would, but tells "not found" (127) from "found, cannot run" (126). */
static void exec_command(char **argv) {
  const char *name = argv[0];
  if (strchr(name, '/')) {
    execv(name, argv);
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) die(EXIT_NOT_FOUND, "exec: \"%s\": no such file or directory", name);
    die(EXIT_CANNOT_RUN, "exec: \"%s\": %s", name, strerror(err));
  }
  const char *path = getenv("PATH");
  if (path == NULL || *path == '\0') path = DEFAULT_PATH;
  size_t name_len = strlen(name);
  int denied = 0;
  int other_errno = 0;
  const char *dir = path;
  for (;;) {
    const char *colon = strchrnul(dir, ':');
    size_t dir_len = (size_t)(colon - dir);
    char candidate[4096];
    if (dir_len + name_len + 2 <= sizeof candidate) {
      if (dir_len == 0) {
        memcpy(candidate, name, name_len + 1); /* an empty PATH entry means the current directory */
      } else {
        memcpy(candidate, dir, dir_len);
        candidate[dir_len] = '/';
        memcpy(candidate + dir_len + 1, name, name_len + 1);
      }
      if (is_executable_file(candidate)) {
        execv(candidate, argv);
        if (errno == EACCES) denied = 1;
        else if (errno != ENOENT && errno != ENOTDIR) other_errno = errno;
      }
    }
    if (*colon == '\0') break;
    dir = colon + 1;
  }
  if (other_errno) die(EXIT_CANNOT_RUN, "exec: \"%s\": %s", name, strerror(other_errno));
  if (denied) die(EXIT_CANNOT_RUN, "exec: \"%s\": permission denied", name);
  die(EXIT_NOT_FOUND, "exec: \"%s\": executable file not found in $PATH", name);
}

static void set_identity(const struct options *options) {
  if (options->groups != NULL) {
    gid_t list[MAX_GROUPS];
    size_t count = 0;
    char *copy = strdup(options->groups);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
      if (count == MAX_GROUPS) die(EXIT_CANNOT_RUN, "too many supplementary groups");
      list[count++] = (gid_t)parse_id("--groups", item);
    }
    if (setgroups(count, list) != 0) die(EXIT_CANNOT_RUN, "setgroups %s: %s", options->groups, strerror(errno));
  }
  if (options->gid >= 0 && setgid((gid_t)options->gid) != 0)
    die(EXIT_CANNOT_RUN, "setgid %ld: %s", options->gid, strerror(errno));
  if (options->uid >= 0 && setuid((uid_t)options->uid) != 0)
    die(EXIT_CANNOT_RUN, "setuid %ld: %s", options->uid, strerror(errno));
}

/*
 * The command's own process group, in the foreground of its terminal: signals the terminal sends (ctrl-c)
 * reach it and not the init or relay above it, which would forward them a second time. A session leader
 * (the plain mode, where node already made one) keeps the group it leads.
 */
static void take_own_process_group(bool tty) {
  if (getsid(0) == getpid()) return;
  setpgid(0, 0);
  if (!tty) return;
  sigset_t ttou, old;
  sigemptyset(&ttou);
  sigaddset(&ttou, SIGTTOU);
  sigprocmask(SIG_BLOCK, &ttou, &old); /* a background group may only take the terminal with this blocked */
  if (tcsetpgrp(STDIN_FILENO, getpgrp()) != 0) warn_msg("cannot take the terminal's foreground: %s", strerror(errno));
  sigprocmask(SIG_SETMASK, &old, NULL);
}

void become_command(const struct options *options) {
  take_own_process_group(options->tty);
  restore_signals();
  /* The kernel clears the parent-death signal when the ids change: armed again, so a command run as
   * another user still dies with its parent. */
  int death_signal = 0;
  prctl(PR_GET_PDEATHSIG, &death_signal);
  pid_t parent = getppid();
  set_identity(options);
  if (death_signal != 0) {
    prctl(PR_SET_PDEATHSIG, death_signal);
    if (getppid() != parent) _exit(EXIT_CANNOT_RUN);
  }
  if (options->cwd != NULL && chdir(options->cwd) != 0)
    die(EXIT_CANNOT_RUN, "chdir to cwd \"%s\": %s", options->cwd, strerror(errno));
  exec_command(options->argv);
  exit(EXIT_CANNOT_RUN);
}

static void parse_options(int argc, char **argv, struct options *options) {
  *options = (struct options){.uid = -1, .gid = -1};
  int i = 1;
  for (; i < argc; i++) {
    const char *flag = argv[i];
    if (strcmp(flag, "--") == 0) {
      i++;
      break;
    }
    if (strcmp(flag, "--init") == 0) { options->init = true; continue; }
    if (strcmp(flag, "--new-container") == 0) { options->new_container = true; continue; }
    if (strcmp(flag, "--tty") == 0) { options->tty = true; continue; }
    if (i + 1 >= argc) die(EXIT_CANNOT_RUN, "option %s needs a value", flag);
    const char *value = argv[++i];
    if (strcmp(flag, "--uid") == 0) options->uid = parse_id(flag, value);
    else if (strcmp(flag, "--gid") == 0) options->gid = parse_id(flag, value);
    else if (strcmp(flag, "--groups") == 0) options->groups = value;
    else if (strcmp(flag, "--cwd") == 0) options->cwd = value;
    else if (strcmp(flag, "--join") == 0) options->join_pid = parse_id(flag, value);
    else if (strcmp(flag, "--cgroup") == 0) options->cgroup = value;
    else if (strcmp(flag, "--mask") == 0) {
      if (options->mask_count == (int)(sizeof options->masks / sizeof options->masks[0]))
        die(EXIT_CANNOT_RUN, "too many --mask paths");
      options->masks[options->mask_count++] = value;
    } else die(EXIT_CANNOT_RUN, "unknown option %s", flag);
  }
  if (i >= argc) die(EXIT_CANNOT_RUN, "no command given");
  if (options->new_container && options->join_pid > 0) die(EXIT_CANNOT_RUN, "--new-container and --join exclude each other");
  if (options->init && options->join_pid > 0) die(EXIT_CANNOT_RUN, "an exec session joins the container's init; --init is for the main process");
  options->argv = argv + i;
}

/*
 * Dies with its parent (the --dev agent can be killed; in a VM the agent is PID 1 and never goes). A parent
 * outside this process's PID namespace shows as pid 0.
 */
static void die_with_parent(pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  pid_t now = getppid();
  if (now != parent && now != 0) _exit(EXIT_CANNOT_RUN);
}

int main(int argc, char **argv) {
  struct options options;
  parse_options(argc, argv, &options);
  bool container = options.new_container || options.join_pid > 0;
  die_with_parent(getppid());
  if (!options.init && !container) become_command(&options);

  /* Blocked from here on, so no signal is lost before the relay and the init wait for them; the command
   * gets its mask back in become_command. */
  block_all_signals();
  int status_pipe[2], go_pipe[2];
  if (pipe2(status_pipe, O_CLOEXEC) != 0 || pipe2(go_pipe, O_CLOEXEC) != 0)
    die(EXIT_CANNOT_RUN, "pipe: %s", strerror(errno));
  int cgroup_procs_fd = -1;
  if (options.new_container) enter_new_container(&options);
  if (options.join_pid > 0) join_container_before_fork(&options, &cgroup_procs_fd);

  pid_t relay = getpid();
  pid_t child = fork();
  if (child < 0) die(EXIT_CANNOT_RUN, "fork: %s", strerror(errno));
  if (child == 0) {
    close(status_pipe[0]);
    close(go_pipe[1]);
    die_with_parent(relay);
    char go;
    if (read(go_pipe[0], &go, 1) != 1) _exit(EXIT_CANNOT_RUN); /* the relay failed; it said why */
    close(go_pipe[0]);
    if (options.join_pid > 0) join_container_after_fork();
    if (options.new_container) set_up_container_view(&options);
    if (container) drop_to_default_capabilities();
    if (options.init) run_init(&options, status_pipe[1]);
    become_command(&options);
  }
  close(status_pipe[1]);
  close(go_pipe[0]);
  if (cgroup_procs_fd >= 0) {
    move_to_cgroup(cgroup_procs_fd, child);
    close(cgroup_procs_fd);
  }
  if (write(go_pipe[1], "g", 1) != 1) {
    kill(child, SIGKILL);
    die(EXIT_CANNOT_RUN, "cannot start the command: %s", strerror(errno));
  }
  close(go_pipe[1]);
  run_parent_relay(child, status_pipe[0], options.tty && !options.init, options.init);
}
