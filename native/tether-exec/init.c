/*
 * The two waiting roles of the helper.
 *
 * The relay is the agent's child, outside the container: it forwards what the agent sends to the process
 * it started and exits the way that process's command did, so the agent sees the exit code or signal.
 *
 * The init is the container's PID 1 (or, without namespaces, a child subreaper): it starts the command as
 * its child, reaps every orphan of the container, forwards signals to the command (its process group for
 * a terminal), and when the command ends, hands its wait status to the relay through a pipe and exits; in
 * a PID namespace the kernel then kills whatever the container left, as Docker's does.
 *
 * Both block every signal and take them with sigwaitinfo(2): a PID namespace's init only receives signals
 * it has not left at their default action, and blocked ones count as caught.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tether-exec.h"

void block_all_signals(void) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
}

void restore_signals(void) {
  for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL); /* SIGKILL/SIGSTOP and glibc's own: EINVAL, fine */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

/* Dies by `sig` so the parent sees the same wait status; no core file from the helper itself. */
static void die_by_signal(int sig) {
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  signal(sig, SIG_DFL);
  sigset_t only;
  sigemptyset(&only);
  sigaddset(&only, sig);
  sigprocmask(SIG_UNBLOCK, &only, NULL);
  kill(getpid(), sig);
  _exit(128 + sig); /* a signal whose default is not to terminate cannot have ended the command */
}

static void exit_like(int status) {
  if (WIFSIGNALED(status)) die_by_signal(WTERMSIG(status));
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : EXIT_CANNOT_RUN);
}

/* What the init reports: the command's raw wait status, as text. */
static void send_status(int fd, int status) {
  char text[24];
  int length = snprintf(text, sizeof text, "%d\n", status);
  if (write(fd, text, (size_t)length) != length) warn_msg("cannot report the exit status: %s", strerror(errno));
}

static bool receive_status(int fd, int *status) {
  char text[24] = {0};
  ssize_t got;
  do got = read(fd, text, sizeof text - 1);
  while (got < 0 && errno == EINTR);
  if (got <= 0) return false;
  char *end = NULL;
  long value = strtol(text, &end, 10);
  if (end == text || *end != '\n') return false;
  *status = (int)value;
  return true;
}

static int next_signal(void) {
  sigset_t all;
  sigfillset(&all);
  for (;;) {
    int sig = sigwaitinfo(&all, NULL);
    if (sig > 0) return sig;
  }
}

void run_parent_relay(pid_t child, int status_read_fd, bool signal_group, bool child_is_init) {
  for (;;) {
    int sig = next_signal();
    if (sig == SIGCHLD) {
      int status;
      pid_t done = waitpid(child, &status, WNOHANG);
      if (done != child) continue;
      int reported;
      /* The init reports its command's status; a command exec'd in place has its own. */
      if (child_is_init && receive_status(status_read_fd, &reported)) exit_like(reported);
      exit_like(status);
    }
    /* The init passes a FORWARD_SIGKILL on; a command is killed outright. */
    int forwarded = sig == FORWARD_SIGKILL && !child_is_init ? SIGKILL : sig;
    kill(signal_group ? -child : child, forwarded);
  }
}

void run_init(const struct options *options, int status_write_fd) {
  bool subreaper = !options->new_container;
  if (subreaper) {
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    /* No PID namespace ends the command's group when this init dies: the relay's death reaches it as a
     * signal it can act on (SIGKILL to the group, below) instead of SIGKILL to itself alone. */
    pid_t relay = getppid();
    prctl(PR_SET_PDEATHSIG, FORWARD_SIGKILL);
    if (getppid() != relay) kill(getpid(), FORWARD_SIGKILL); /* the relay is already gone: pending, handled below */
  }
  pid_t init = getpid();
  pid_t command = fork();
  if (command < 0) die(EXIT_CANNOT_RUN, "fork: %s", strerror(errno));
  if (command == 0) {
    close(status_write_fd);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != init) _exit(EXIT_CANNOT_RUN);
    become_command(options);
  }
  for (;;) {
    int sig = next_signal();
    if (sig != SIGCHLD) {
      int forwarded = sig == FORWARD_SIGKILL ? SIGKILL : sig;
      kill(options->tty ? -command : command, forwarded);
      if (subreaper && sig == FORWARD_SIGKILL) kill(-command, SIGKILL);
      continue;
    }
    int status;
    pid_t done;
    while ((done = waitpid(-1, &status, WNOHANG)) > 0) {
      if (done != command) continue; /* an orphan of the container: reaped, nothing more */
      /* Without a PID namespace nothing kills what the command left behind: its process group goes. */
      if (subreaper) kill(-command, SIGKILL);
      send_status(status_write_fd, status);
      _exit(0);
    }
  }
}
