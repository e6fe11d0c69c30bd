/*
 * tether-exec: the last step between the agent and a container process.
 *
 * The agent spawns every session (main process and exec) through this helper, because Node cannot set
 * supplementary groups (libuv drops them) and reports a missing command as a spawn error rather than as
 * the exit codes users expect. The helper sets identity and working directory, looks the command up in
 * the session's PATH, and execs it in place, so the pid the agent holds is the container process's pid.
 * Failures are reported as Docker reports them: a message on stderr and exit 126 (cannot run) or 127
 * (not found).
 *
 * usage: tether-exec [--uid N] [--gid N] [--groups G1,G2,...] [--cwd DIR] -- ARGV...
 * Static, so it runs in any root filesystem whatever its libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_CANNOT_RUN 126
#define EXIT_NOT_FOUND 127
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_GROUPS 256

static void die(int code, const char *fmt, const char *arg, int err) {
  fprintf(stderr, "tether: ");
  fprintf(stderr, fmt, arg);
  if (err) fprintf(stderr, ": %s", strerror(err));
  fputc('\n', stderr);
  exit(code);
}

static long parse_id(const char *flag, const char *text) {
  char *end = NULL;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno || *text == '\0' || *end != '\0' || value < 0 || value > 0xfffffffeL) die(EXIT_CANNOT_RUN, "bad %s value", flag, 0);
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
    if (err == ENOENT || err == ENOTDIR) die(EXIT_NOT_FOUND, "exec: \"%s\": no such file or directory", name, 0);
    die(EXIT_CANNOT_RUN, "exec: \"%s\"", name, err);
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
  if (other_errno) die(EXIT_CANNOT_RUN, "exec: \"%s\"", name, other_errno);
  if (denied) die(EXIT_CANNOT_RUN, "exec: \"%s\": permission denied", name, 0);
  die(EXIT_NOT_FOUND, "exec: \"%s\": executable file not found in $PATH", name, 0);
}

int main(int argc, char **argv) {
  long uid = -1, gid = -1;
  const char *groups = NULL, *cwd = NULL;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) { i++; break; }
    if (i + 1 >= argc) die(EXIT_CANNOT_RUN, "option %s needs a value", argv[i], 0);
    if (strcmp(argv[i], "--uid") == 0) uid = parse_id("--uid", argv[++i]);
    else if (strcmp(argv[i], "--gid") == 0) gid = parse_id("--gid", argv[++i]);
    else if (strcmp(argv[i], "--groups") == 0) groups = argv[++i];
    else if (strcmp(argv[i], "--cwd") == 0) cwd = argv[++i];
    else die(EXIT_CANNOT_RUN, "unknown option %s", argv[i], 0);
  }
  if (i >= argc) die(EXIT_CANNOT_RUN, "%s", "no command given", 0);

  if (groups != NULL) {
    gid_t list[MAX_GROUPS];
    size_t count = 0;
    char *copy = strdup(groups);
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
      if (count == MAX_GROUPS) die(EXIT_CANNOT_RUN, "%s", "too many supplementary groups", 0);
      list[count++] = (gid_t)parse_id("--groups", item);
    }
    if (setgroups(count, list) != 0) die(EXIT_CANNOT_RUN, "setgroups %s", groups, errno);
  }
  char text[32];
  if (gid >= 0 && setgid((gid_t)gid) != 0) {
    snprintf(text, sizeof text, "%ld", gid);
    die(EXIT_CANNOT_RUN, "setgid %s", text, errno);
  }
  if (uid >= 0 && setuid((uid_t)uid) != 0) {
    snprintf(text, sizeof text, "%ld", uid);
    die(EXIT_CANNOT_RUN, "setuid %s", text, errno);
  }
  if (cwd != NULL && chdir(cwd) != 0) die(EXIT_CANNOT_RUN, "chdir to cwd \"%s\"", cwd, errno);
  exec_command(argv + i);
  return EXIT_CANNOT_RUN;
}
