/*
 * sys.node: the few Linux system calls the agent needs as PID 1 and Node does not offer
 * (mount, pivot_root, reboot, finit_module, child reaping, rlimits, interface setup), plus ways to wait on
 * char devices that Node's streams cannot drive (a virtio-serial port): watch() in the event loop, and an
 * off-thread poll() for the rest.
 *
 * N-API (NAPI_VERSION 8), libc, and libuv's stable 1.x ABI (uv_poll_t, for watch()), whose symbols the node
 * binary exports; so one build loads in Node 20 (the tests) and the Node 24 SEA (the VM).
 * Build: gcc -O2 -shared -fPIC -DNAPI_VERSION=8 -I<node>/include/node native/sys.c -o build/native/sys.node
 *
 * Every failure throws an Error whose message is "<syscall>: <CODE> (<strerror>)" and which carries
 * .errno (number), .code ('EINVAL', ...) and .syscall. The TypeScript facade (agent/src/sys/sys.ts)
 * rewraps these with messages that name the arguments.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- errors */

static const char *errno_name(int err) {
  switch (err) {
#define E(x) \
  case x:    \
    return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(ENOEXEC) E(EBADF) E(ECHILD)
    E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(ENOTBLK) E(EBUSY) E(EEXIST) E(EXDEV) E(ENODEV)
    E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOTTY) E(ETXTBSY) E(EFBIG) E(ENOSPC)
    E(ESPIPE) E(EROFS) E(EMLINK) E(EPIPE) E(EDOM) E(ERANGE) E(EDEADLK) E(ENAMETOOLONG) E(ENOLCK)
    E(ENOSYS) E(ENOTEMPTY) E(ELOOP) E(ENOMSG) E(ENODATA) E(ENOSTR) E(ETIME) E(ENOLINK) E(EPROTO)
    E(EBADMSG) E(EOVERFLOW) E(EILSEQ) E(EUSERS) E(ENOTSOCK) E(EDESTADDRREQ) E(EMSGSIZE)
    E(EPROTOTYPE) E(ENOPROTOOPT) E(EPROTONOSUPPORT) E(EOPNOTSUPP) E(EAFNOSUPPORT) E(EADDRINUSE)
    E(EADDRNOTAVAIL) E(ENETDOWN) E(ENETUNREACH) E(ECONNABORTED) E(ECONNRESET) E(ENOBUFS)
    E(EISCONN) E(ENOTCONN) E(ETIMEDOUT) E(ECONNREFUSED) E(EHOSTDOWN) E(EHOSTUNREACH) E(EALREADY)
    E(EINPROGRESS) E(ESTALE) E(EDQUOT) E(ECANCELED) E(ENOKEY) E(EKEYEXPIRED) E(EKEYREVOKED)
    E(EKEYREJECTED) E(ENOMEDIUM) E(EMEDIUMTYPE) E(EUCLEAN) E(ENOPKG) E(EBADE) E(EBADR) E(EBADFD)
#undef E
    default:
      return NULL;
  }
}

static napi_value make_errno_error(napi_env env, const char *syscall_name, int err) {
  char codebuf[32];
  const char *code = errno_name(err);
  if (code == NULL) {
    snprintf(codebuf, sizeof codebuf, "E%d", err);
    code = codebuf;
  }
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s (%s)", syscall_name, code, strerror(err));
  napi_value jmsg, jcode, jerr, jerrno, jsys;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode);
  napi_create_error(env, jcode, jmsg, &jerr);
  napi_create_int32(env, err, &jerrno);
  napi_create_string_utf8(env, syscall_name, NAPI_AUTO_LENGTH, &jsys);
  napi_set_named_property(env, jerr, "errno", jerrno);
  napi_set_named_property(env, jerr, "syscall", jsys);
  return jerr;
}

/* Throws and returns NULL, so callers can `return throw_errno(...)`. */
static napi_value throw_errno(napi_env env, const char *syscall_name, int err) {
  napi_throw(env, make_errno_error(env, syscall_name, err));
  return NULL;
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

/* ---------------------------------------------------------------- argument helpers */

#define MAX_ARGS 6
#define GET_ARGS(n)                                                    \
  size_t argc = (n);                                                   \
  napi_value argv[MAX_ARGS];                                           \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) \
    return NULL;                                                       \
  for (size_t i_ = argc; i_ < (size_t)(n); i_++) napi_get_undefined(env, &argv[i_]);

static int is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  return t == napi_undefined || t == napi_null;
}

/* A malloc'd UTF-8 copy of a JS string; NULL (with a TypeError thrown) if it is not one.
 * With nullable set, null/undefined give *out = NULL and return 1. */
static int get_string(napi_env env, napi_value v, const char *what, int nullable, char **out) {
  *out = NULL;
  if (nullable && is_nullish(env, v)) return 1;
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a string", what);
    throw_type(env, msg);
    return 0;
  }
  char *s = malloc(len + 1);
  if (s == NULL) {
    throw_errno(env, "malloc", ENOMEM);
    return 0;
  }
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) { /* an embedded NUL would silently truncate a path */
    free(s);
    char msg[128];
    snprintf(msg, sizeof msg, "%s must not contain NUL bytes", what);
    throw_type(env, msg);
    return 0;
  }
  *out = s;
  return 1;
}

static int get_double(napi_env env, napi_value v, const char *what, double *out) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a number", what);
    throw_type(env, msg);
    return 0;
  }
  return 1;
}

static int get_int(napi_env env, napi_value v, const char *what, int64_t *out) {
  double d;
  if (!get_double(env, v, what, &d)) return 0;
  if (d != floor(d) || d < -9007199254740991.0 || d > 9007199254740991.0) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be an integer", what);
    throw_type(env, msg);
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}

static napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static napi_value null_value(napi_env env) {
  napi_value u;
  napi_get_null(env, &u);
  return u;
}

static void set_int(napi_env env, napi_value obj, const char *key, int64_t value) {
  napi_value v;
  napi_create_int64(env, value, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_double(napi_env env, napi_value obj, const char *key, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_bool(napi_env env, napi_value obj, const char *key, int value) {
  napi_value v;
  napi_get_boolean(env, value != 0, &v);
  napi_set_named_property(env, obj, key, v);
}

static void set_str(napi_env env, napi_value obj, const char *key, const char *value) {
  napi_value v;
  napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, key, v);
}

/* ---------------------------------------------------------------- filesystem and system */

/* mount(source|null, target, fstype|null, flags, data|null) */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  GET_ARGS(5);
  char *source = NULL, *target = NULL, *fstype = NULL, *data = NULL;
  int64_t flags;
  napi_value ret = NULL;
  if (!get_string(env, argv[0], "source", 1, &source)) goto out;
  if (!get_string(env, argv[1], "target", 0, &target)) goto out;
  if (!get_string(env, argv[2], "fstype", 1, &fstype)) goto out;
  if (!get_int(env, argv[3], "flags", &flags)) goto out;
  if (!get_string(env, argv[4], "data", 1, &data)) goto out;
  if (mount(source, target, fstype, (unsigned long)flags, data) != 0)
    throw_errno(env, "mount", errno);
  else
    ret = undef(env);
out:
  free(source), free(target), free(fstype), free(data);
  return ret;
}

static napi_value js_umount2(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  char *target;
  int64_t flags = 0;
  if (!get_string(env, argv[0], "target", 0, &target)) return NULL;
  if (!is_nullish(env, argv[1]) && !get_int(env, argv[1], "flags", &flags)) {
    free(target);
    return NULL;
  }
  int rc = umount2(target, (int)flags);
  int err = errno;
  free(target);
  return rc != 0 ? throw_errno(env, "umount2", err) : undef(env);
}

static napi_value js_pivot_root(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  char *new_root, *put_old;
  if (!get_string(env, argv[0], "newRoot", 0, &new_root)) return NULL;
  if (!get_string(env, argv[1], "putOld", 0, &put_old)) {
    free(new_root);
    return NULL;
  }
  long rc = syscall(SYS_pivot_root, new_root, put_old);
  int err = errno;
  free(new_root), free(put_old);
  return rc != 0 ? throw_errno(env, "pivot_root", err) : undef(env);
}

static napi_value js_chroot(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  char *path;
  if (!get_string(env, argv[0], "path", 0, &path)) return NULL;
  int rc = chroot(path);
  int err = errno;
  free(path);
  return rc != 0 ? throw_errno(env, "chroot", err) : undef(env);
}

static napi_value js_sethostname(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  char *name;
  if (!get_string(env, argv[0], "name", 0, &name)) return NULL;
  int rc = sethostname(name, strlen(name));
  int err = errno;
  free(name);
  return rc != 0 ? throw_errno(env, "sethostname", err) : undef(env);
}

static napi_value js_reboot(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int64_t cmd;
  if (!get_int(env, argv[0], "cmd", &cmd)) return NULL;
  if (reboot((int)cmd) != 0) return throw_errno(env, "reboot", errno);
  return undef(env);
}

static napi_value js_sync(napi_env env, napi_callback_info info) {
  (void)info;
  sync();
  return undef(env);
}

/* finitModule(path, params) → 0 when loaded, EEXIST when it was already loaded; throws otherwise. */
static napi_value js_finit_module(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  char *path, *params = NULL;
  if (!get_string(env, argv[0], "path", 0, &path)) return NULL;
  if (!get_string(env, argv[1], "params", 1, &params)) {
    free(path);
    return NULL;
  }
  napi_value ret = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw_errno(env, "open", errno);
  } else {
    long rc = syscall(SYS_finit_module, fd, params != NULL ? params : "", 0);
    int err = errno;
    close(fd);
    if (rc == 0 || err == EEXIST)
      napi_create_int32(env, rc == 0 ? 0 : EEXIST, &ret);
    else
      throw_errno(env, "finit_module", err);
  }
  free(path), free(params);
  return ret;
}

/* ---------------------------------------------------------------- processes */

static napi_value js_set_subreaper(napi_env env, napi_callback_info info) {
  (void)info;
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) return throw_errno(env, "prctl", errno);
  return undef(env);
}

/* waitpid(pid, options) → null when nothing changed (WNOHANG), else {pid, exitCode} | {pid, signal, coreDumped}
 * | {pid, stopped: signal} | {pid, continued: true}. */
static napi_value js_waitpid(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  int64_t pid, options = 0;
  if (!get_int(env, argv[0], "pid", &pid)) return NULL;
  if (!is_nullish(env, argv[1]) && !get_int(env, argv[1], "options", &options)) return NULL;
  int status = 0;
  pid_t rc;
  do rc = waitpid((pid_t)pid, &status, (int)options);
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return throw_errno(env, "waitpid", errno);
  if (rc == 0) return null_value(env);
  napi_value obj;
  napi_create_object(env, &obj);
  set_int(env, obj, "pid", rc);
  if (WIFEXITED(status)) {
    set_int(env, obj, "exitCode", WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    set_int(env, obj, "signal", WTERMSIG(status));
    set_bool(env, obj, "coreDumped", WCOREDUMP(status));
  } else if (WIFSTOPPED(status)) {
    set_int(env, obj, "stopped", WSTOPSIG(status));
  } else if (WIFCONTINUED(status)) {
    set_bool(env, obj, "continued", 1);
  }
  return obj;
}

static napi_value js_boot_time_ms(napi_env env, napi_callback_info info) {
  (void)info;
  struct timespec ts;
  if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0) return throw_errno(env, "clock_gettime", errno);
  napi_value v;
  napi_create_double(env, (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6, &v);
  return v;
}

/* Limits: a negative number or Infinity means RLIM_INFINITY. */
static int get_rlim(napi_env env, napi_value v, const char *what, rlim_t *out) {
  double d;
  if (!get_double(env, v, what, &d)) return 0;
  if (d < 0 || isinf(d)) {
    *out = RLIM_INFINITY;
    return 1;
  }
  if (d != floor(d) || d > 9007199254740991.0) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a non-negative integer or Infinity", what);
    throw_type(env, msg);
    return 0;
  }
  *out = (rlim_t)d;
  return 1;
}

static napi_value js_setrlimit(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int64_t resource;
  struct rlimit rl;
  if (!get_int(env, argv[0], "resource", &resource)) return NULL;
  if (!get_rlim(env, argv[1], "soft", &rl.rlim_cur)) return NULL;
  if (!get_rlim(env, argv[2], "hard", &rl.rlim_max)) return NULL;
  if (setrlimit((int)resource, &rl) != 0) return throw_errno(env, "setrlimit", errno);
  return undef(env);
}

static napi_value js_getrlimit(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  int64_t resource;
  struct rlimit rl;
  if (!get_int(env, argv[0], "resource", &resource)) return NULL;
  if (getrlimit((int)resource, &rl) != 0) return throw_errno(env, "getrlimit", errno);
  napi_value obj;
  napi_create_object(env, &obj);
  set_double(env, obj, "soft", rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
  set_double(env, obj, "hard", rl.rlim_max == RLIM_INFINITY ? INFINITY : (double)rl.rlim_max);
  return obj;
}

/* ---------------------------------------------------------------- network (ioctl on an AF_INET socket) */

static int inet_socket(napi_env env) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw_errno(env, "socket", errno);
  return s;
}

static int get_ifname(napi_env env, napi_value v, struct ifreq *ifr) {
  char *name;
  if (!get_string(env, v, "name", 0, &name)) return 0;
  size_t len = strlen(name);
  if (len == 0 || len >= IFNAMSIZ) {
    free(name);
    throw_type(env, "name must be an interface name of 1 to 15 bytes");
    return 0;
  }
  memset(ifr, 0, sizeof *ifr);
  memcpy(ifr->ifr_name, name, len + 1);
  free(name);
  return 1;
}

static int get_ipv4(napi_env env, napi_value v, const char *what, struct in_addr *out) {
  char *text;
  if (!get_string(env, v, what, 0, &text)) return 0;
  int ok = inet_pton(AF_INET, text, out) == 1;
  free(text);
  if (!ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s must be a dotted IPv4 address", what);
    throw_type(env, msg);
  }
  return ok;
}

static void set_sockaddr(struct sockaddr *sa, struct in_addr addr) {
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr = addr;
  memcpy(sa, &sin, sizeof sin);
}

static napi_value js_if_up(napi_env env, napi_callback_info info) {
  GET_ARGS(1);
  struct ifreq ifr;
  if (!get_ifname(env, argv[0], &ifr)) return NULL;
  int s = inet_socket(env);
  if (s < 0) return NULL;
  napi_value ret = NULL;
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
    throw_errno(env, "ioctl(SIOCGIFFLAGS)", errno);
  } else {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
      throw_errno(env, "ioctl(SIOCSIFFLAGS)", errno);
    else
      ret = undef(env);
  }
  close(s);
  return ret;
}

/* ifSetAddress(name, ipv4, prefixLen): address, netmask and broadcast. */
static napi_value js_if_set_address(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  struct ifreq ifr;
  struct in_addr addr, mask, bcast;
  int64_t prefix;
  if (!get_ifname(env, argv[0], &ifr)) return NULL;
  if (!get_ipv4(env, argv[1], "ipv4", &addr)) return NULL;
  if (!get_int(env, argv[2], "prefixLen", &prefix)) return NULL;
  if (prefix < 0 || prefix > 32) return throw_type(env, "prefixLen must be 0 to 32");
  mask.s_addr = prefix == 0 ? 0 : htonl(0xffffffffu << (32 - prefix));
  bcast.s_addr = addr.s_addr | ~mask.s_addr;
  int s = inet_socket(env);
  if (s < 0) return NULL;
  napi_value ret = NULL;
  set_sockaddr(&ifr.ifr_addr, addr);
  if (ioctl(s, SIOCSIFADDR, &ifr) != 0) {
    throw_errno(env, "ioctl(SIOCSIFADDR)", errno);
    goto out;
  }
  set_sockaddr(&ifr.ifr_netmask, mask);
  if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) {
    throw_errno(env, "ioctl(SIOCSIFNETMASK)", errno);
    goto out;
  }
  if (prefix < 31) {
    set_sockaddr(&ifr.ifr_broadaddr, bcast);
    if (ioctl(s, SIOCSIFBRDADDR, &ifr) != 0) {
      throw_errno(env, "ioctl(SIOCSIFBRDADDR)", errno);
      goto out;
    }
  }
  ret = undef(env);
out:
  close(s);
  return ret;
}

/* addDefaultRoute(gateway, ifname?) */
static napi_value js_add_default_route(napi_env env, napi_callback_info info) {
  GET_ARGS(2);
  struct in_addr gw, any = {0};
  char *dev = NULL;
  if (!get_ipv4(env, argv[0], "gateway", &gw)) return NULL;
  if (!get_string(env, argv[1], "ifname", 1, &dev)) return NULL;
  struct rtentry rt;
  memset(&rt, 0, sizeof rt);
  set_sockaddr(&rt.rt_dst, any);
  set_sockaddr(&rt.rt_genmask, any);
  set_sockaddr(&rt.rt_gateway, gw);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  rt.rt_dev = dev;
  int s = inet_socket(env);
  napi_value ret = NULL;
  if (s >= 0) {
    if (ioctl(s, SIOCADDRT, &rt) != 0)
      throw_errno(env, "ioctl(SIOCADDRT)", errno);
    else
      ret = undef(env);
    close(s);
  }
  free(dev);
  return ret;
}

static int mask_to_prefix(uint32_t mask_be) {
  uint32_t m = ntohl(mask_be);
  int n = 0;
  while (m & 0x80000000u) n++, m <<= 1;
  return n;
}

/* ifList() → [{name, index, up, running, loopback, mtu, mac?, ipv4?, prefixLen?}] */
static napi_value js_if_list(napi_env env, napi_callback_info info) {
  (void)info;
  struct if_nameindex *list = if_nameindex();
  if (list == NULL) return throw_errno(env, "if_nameindex", errno);
  int s = inet_socket(env);
  if (s < 0) {
    if_freenameindex(list);
    return NULL;
  }
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t n = 0;
  for (struct if_nameindex *p = list; p->if_index != 0 && p->if_name != NULL; p++) {
    napi_value obj;
    napi_create_object(env, &obj);
    set_str(env, obj, "name", p->if_name);
    set_int(env, obj, "index", p->if_index);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, p->if_name, IFNAMSIZ - 1);
    short flags = ioctl(s, SIOCGIFFLAGS, &ifr) == 0 ? ifr.ifr_flags : 0;
    set_bool(env, obj, "up", flags & IFF_UP);
    set_bool(env, obj, "running", flags & IFF_RUNNING);
    set_bool(env, obj, "loopback", flags & IFF_LOOPBACK);
    if (ioctl(s, SIOCGIFMTU, &ifr) == 0) set_int(env, obj, "mtu", ifr.ifr_mtu);
    if (ioctl(s, SIOCGIFHWADDR, &ifr) == 0 && ifr.ifr_hwaddr.sa_family == ARPHRD_ETHER) {
      const unsigned char *m = (const unsigned char *)ifr.ifr_hwaddr.sa_data;
      char mac[18];
      snprintf(mac, sizeof mac, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
      set_str(env, obj, "mac", mac);
    }
    if (ioctl(s, SIOCGIFADDR, &ifr) == 0) {
      struct sockaddr_in sin;
      memcpy(&sin, &ifr.ifr_addr, sizeof sin);
      char text[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
      set_str(env, obj, "ipv4", text);
      if (ioctl(s, SIOCGIFNETMASK, &ifr) == 0) {
        memcpy(&sin, &ifr.ifr_netmask, sizeof sin);
        set_int(env, obj, "prefixLen", mask_to_prefix(sin.sin_addr.s_addr));
      }
    }
    napi_set_element(env, arr, n++, obj);
  }
  close(s);
  if_freenameindex(list);
  return arr;
}

/* ---------------------------------------------------------------- async poll */

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  short events;
  int timeout_ms;
  int revents;
  int err;
} poll_job;

static void poll_execute(napi_env env, void *data) {
  (void)env;
  poll_job *job = data;
  struct pollfd pfd = {.fd = job->fd, .events = job->events, .revents = 0};
  int rc;
  do rc = poll(&pfd, 1, job->timeout_ms);
  while (rc < 0 && errno == EINTR); /* a signal restarts the full timeout; callers pass bounded ones */
  if (rc < 0)
    job->err = errno;
  else
    job->revents = rc == 0 ? 0 : pfd.revents;
}

static void poll_complete(napi_env env, napi_status status, void *data) {
  poll_job *job = data;
  if (status != napi_ok) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, "poll", ECANCELED));
  } else if (job->err != 0) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, "poll", job->err));
  } else {
    napi_value v;
    napi_create_int32(env, job->revents, &v);
    napi_resolve_deferred(env, job->deferred, v);
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

/* poll(fd, events, timeoutMs) → Promise<revents> (0 on timeout); runs on the libuv thread pool. */
static napi_value js_poll(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int64_t fd, events, timeout;
  if (!get_int(env, argv[0], "fd", &fd)) return NULL;
  if (!get_int(env, argv[1], "events", &events)) return NULL;
  if (!get_int(env, argv[2], "timeoutMs", &timeout)) return NULL;
  if (fd < 0 || fd > 0x7fffffff) return throw_type(env, "fd must be a non-negative integer");
  if (timeout > 0x7fffffff) timeout = 0x7fffffff;
  if (timeout < 0) timeout = -1;
  poll_job *job = calloc(1, sizeof *job);
  if (job == NULL) return throw_errno(env, "malloc", ENOMEM);
  job->fd = (int)fd;
  job->events = (short)events;
  job->timeout_ms = (int)timeout;
  napi_value promise, name;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "tether.sys.poll", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, poll_execute, poll_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, "poll", EAGAIN));
    free(job);
  }
  return promise;
}

/* ---------------------------------------------------------------- event-loop watch
 *
 * watch(fd, events, callback) → {close()}: calls callback(revents) from the event loop each time the fd's
 * readiness changes. libuv's own uv_poll_t is level-triggered and folds POLLHUP into "readable", so a
 * virtio-serial port with no host behind it (POLLHUP for as long as nobody connects) would wake the loop on
 * every turn. Instead the fd goes into a private epoll set, edge-triggered (EPOLLET), and uv_poll_t watches
 * that epoll fd: the loop wakes only when the kernel reports a change on the port (bytes arrived, room to
 * write, the host connected or left), and the callback gets the port's exact revents, POLLHUP included.
 *
 * Edge-triggered means: after a callback, read (or write) until EAGAIN before expecting another one.
 *
 * Memory: the watch struct has two owners, the uv handle (until its close callback) and the JS close
 * function (until it is garbage collected); whichever lets go last frees it. */

_Static_assert(EPOLLIN == POLLIN && EPOLLPRI == POLLPRI && EPOLLOUT == POLLOUT && EPOLLERR == POLLERR &&
                   EPOLLHUP == POLLHUP && EPOLLRDHUP == POLLRDHUP,
               "epoll and poll event bits differ");

typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int epfd;
  int active; /* watching; cleared by close() or env cleanup */
  int owners;
} fd_watch;

static void watch_release(fd_watch *w) {
  if (--w->owners == 0) free(w);
}

static void watch_closed(uv_handle_t *handle) {
  fd_watch *w = handle->data;
  close(w->epfd);
  watch_release(w);
}

/* Stops watching. No JS here: it also runs from the env cleanup hook. */
static void watch_stop(fd_watch *w) {
  if (!w->active) return;
  w->active = 0;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, watch_closed);
}

static void watch_cleanup_hook(void *data) {
  fd_watch *w = data;
  watch_stop(w); /* the env is going away: its references go with it */
}

static void watch_unref_js(fd_watch *w) {
  napi_remove_env_cleanup_hook(w->env, watch_cleanup_hook, w);
  napi_delete_reference(w->env, w->callback);
  napi_async_destroy(w->env, w->context);
}

static void watch_call(fd_watch *w, int revents) {
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value fn, recv, arg, result;
  if (napi_get_reference_value(env, w->callback, &fn) == napi_ok && fn != NULL) {
    napi_get_global(env, &recv); /* napi_make_callback wants an object as `this` */
    napi_create_int32(env, revents, &arg);
    if (napi_make_callback(env, w->context, recv, fn, 1, &arg, &result) == napi_pending_exception) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error); /* 'uncaughtException', as a throw in any event-loop callback */
    }
  }
  napi_close_handle_scope(env, scope);
}

static void watch_ready(uv_poll_t *handle, int status, int events) {
  (void)events;
  fd_watch *w = handle->data;
  if (!w->active) return;
  if (status < 0) { /* the epoll fd itself failed: report POLLERR once and stop */
    watch_call(w, POLLERR);
    if (w->active) { /* the callback may have closed it already */
      watch_stop(w);
      watch_unref_js(w);
    }
    return;
  }
  struct epoll_event ev;
  int n;
  do n = epoll_wait(w->epfd, &ev, 1, 0);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return; /* nothing after all (another turn took it) */
  watch_call(w, (int)ev.events & ~EPOLLET);
}

static napi_value js_watch_close(napi_env env, napi_callback_info info) {
  fd_watch *w;
  if (napi_get_cb_info(env, info, NULL, NULL, NULL, (void **)&w) != napi_ok) return NULL;
  if (w->active) {
    watch_stop(w);
    watch_unref_js(w);
  }
  return undef(env);
}

static void watch_close_fn_finalize(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  watch_release(data);
}

/* watch(fd, events, callback) → {close()}; events: POLLIN|POLLOUT|POLLPRI|POLLRDHUP (POLLHUP and POLLERR are
 * always reported). The fd stays the caller's; close() before closing it. */
static napi_value js_watch(napi_env env, napi_callback_info info) {
  GET_ARGS(3);
  int64_t fd, events;
  if (!get_int(env, argv[0], "fd", &fd)) return NULL;
  if (!get_int(env, argv[1], "events", &events)) return NULL;
  if (fd < 0 || fd > 0x7fffffff) return throw_type(env, "fd must be a non-negative integer");
  if (events & ~(int64_t)(POLLIN | POLLPRI | POLLOUT | POLLRDHUP))
    return throw_type(env, "events must be a mask of POLLIN, POLLPRI, POLLOUT and POLLRDHUP");
  napi_valuetype type;
  napi_typeof(env, argv[2], &type);
  if (type != napi_function) return throw_type(env, "callback must be a function");
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return throw_errno(env, "napi_get_uv_event_loop", EINVAL);

  int epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) return throw_errno(env, "epoll_create1", errno);
  struct epoll_event ev = {.events = (uint32_t)events | EPOLLET, .data = {.fd = (int)fd}};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, (int)fd, &ev) != 0) {
    int err = errno;
    close(epfd);
    return throw_errno(env, "epoll_ctl", err);
  }
  fd_watch *w = calloc(1, sizeof *w);
  if (w == NULL) {
    close(epfd);
    return throw_errno(env, "malloc", ENOMEM);
  }
  w->env = env;
  w->epfd = epfd;
  int rc = uv_poll_init(loop, &w->poll, epfd);
  if (rc == 0) {
    w->poll.data = w;
    rc = uv_poll_start(&w->poll, UV_READABLE, watch_ready);
    if (rc != 0) { /* initialised: it must be closed through the loop */
      w->owners = 1;
      w->active = 1;
      watch_stop(w);
      napi_throw_error(env, "EIO", uv_strerror(rc));
      return NULL;
    }
  }
  if (rc != 0) {
    close(epfd);
    free(w);
    napi_throw_error(env, "EIO", uv_strerror(rc));
    return NULL;
  }
  w->active = 1;
  w->owners = 2;
  napi_value name, handle, close_fn;
  napi_create_reference(env, argv[2], 1, &w->callback);
  napi_create_string_utf8(env, "tether.sys.watch", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &w->context);
  napi_add_env_cleanup_hook(env, watch_cleanup_hook, w);
  napi_create_object(env, &handle);
  napi_create_function(env, "close", NAPI_AUTO_LENGTH, js_watch_close, w, &close_fn);
  napi_add_finalizer(env, close_fn, w, watch_close_fn_finalize, NULL, NULL);
  napi_set_named_property(env, handle, "close", close_fn);
  return handle;
}

/* ---------------------------------------------------------------- module */

NAPI_MODULE_INIT() {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"mount", js_mount},
      {"umount2", js_umount2},
      {"pivotRoot", js_pivot_root},
      {"chroot", js_chroot},
      {"sethostname", js_sethostname},
      {"reboot", js_reboot},
      {"sync", js_sync},
      {"finitModule", js_finit_module},
      {"setSubreaper", js_set_subreaper},
      {"waitpid", js_waitpid},
      {"bootTimeMs", js_boot_time_ms},
      {"setrlimit", js_setrlimit},
      {"getrlimit", js_getrlimit},
      {"ifUp", js_if_up},
      {"ifSetAddress", js_if_set_address},
      {"addDefaultRoute", js_add_default_route},
      {"ifList", js_if_list},
      {"poll", js_poll},
      {"watch", js_watch},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f);
    napi_set_named_property(env, exports, fns[i].name, f);
  }
  static const struct {
    const char *name;
    int64_t value;
  } consts[] = {
#define C(x) {#x, (int64_t)(x)},
      C(MS_RDONLY) C(MS_NOSUID) C(MS_NODEV) C(MS_NOEXEC) C(MS_SYNCHRONOUS) C(MS_REMOUNT) C(MS_NOATIME)
      C(MS_NODIRATIME) C(MS_MOVE) C(MS_BIND) C(MS_REC) C(MS_SILENT) C(MS_PRIVATE) C(MS_SLAVE) C(MS_SHARED)
      C(MS_UNBINDABLE) C(MS_RELATIME) C(MS_STRICTATIME) C(MNT_FORCE) C(MNT_DETACH) C(MNT_EXPIRE)
      C(UMOUNT_NOFOLLOW) C(RB_POWER_OFF) C(RB_AUTOBOOT) C(RB_HALT_SYSTEM) C(WNOHANG) C(WUNTRACED)
      C(WCONTINUED) C(__WALL) C(POLLIN) C(POLLPRI) C(POLLOUT) C(POLLERR) C(POLLHUP) C(POLLNVAL)
      C(POLLRDHUP) C(RLIMIT_CPU) C(RLIMIT_FSIZE) C(RLIMIT_DATA) C(RLIMIT_STACK) C(RLIMIT_CORE)
      C(RLIMIT_RSS) C(RLIMIT_NPROC) C(RLIMIT_NOFILE) C(RLIMIT_MEMLOCK) C(RLIMIT_AS) C(RLIMIT_LOCKS)
      C(RLIMIT_SIGPENDING) C(RLIMIT_MSGQUEUE) C(RLIMIT_NICE) C(RLIMIT_RTPRIO) C(RLIMIT_RTTIME)
      C(EEXIST) C(ENOSYS)
#undef C
  };
  for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++) {
    napi_value v;
    napi_create_int64(env, consts[i].value, &v);
    /* __WALL is exported as WALL */
    napi_set_named_property(env, exports, strcmp(consts[i].name, "__WALL") == 0 ? "WALL" : consts[i].name, v);
  }
  return exports;
}
