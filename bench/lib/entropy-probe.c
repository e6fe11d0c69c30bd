/*
 * entropy-probe: what a restored VM clone draws from the kernel, and whether reseeding helps (issue 12's
 * spike; runs in the busybox probe VM of bench/template-clone.bench.ts). Prints, on one line:
 *   clock=  CLOCK_REALTIME, taken first (the host compares it with its own clock)
 *   a=      16 bytes of getrandom() as they come
 *   b=      16 bytes after RNDRESEEDCRNG alone (the crng rekeyed from the input pool as it is)
 *   c=      16 bytes after RNDADDENTROPY with SEED_FILE's bytes, then RNDRESEEDCRNG
 * and each ioctl's result. Needs CAP_SYS_ADMIN (it runs as the probe VM's init).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void draw(const char *name) {
  unsigned char bytes[16];
  if (getrandom(bytes, sizeof bytes, GRND_NONBLOCK) != (ssize_t)sizeof bytes) {
    printf(" %s=error:%s", name, strerror(errno));
    return;
  }
  printf(" %s=", name);
  for (size_t i = 0; i < sizeof bytes; i++) printf("%02x", bytes[i]);
}

static const char *result(int rc) { return rc == 0 ? "ok" : strerror(errno); }

int main(int argc, char **argv) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  printf("clock=%lld.%09ld", (long long)now.tv_sec, now.tv_nsec);
  draw("a");
  int fd = open("/dev/urandom", O_RDWR);
  printf(" reseed1=%s", result(ioctl(fd, RNDRESEEDCRNG)));
  draw("b");
  struct {
    int entropy_count;
    int buf_size;
    unsigned char buf[64];
  } seed = {0};
  int in = argc > 1 ? open(argv[1], O_RDONLY) : -1;
  ssize_t n = in >= 0 ? read(in, seed.buf, sizeof seed.buf) : -1;
  if (n > 0) {
    seed.buf_size = (int)n;
    seed.entropy_count = (int)n * 8;
    printf(" seed=%zd add=%s", n, result(ioctl(fd, RNDADDENTROPY, &seed)));
    printf(" reseed2=%s", result(ioctl(fd, RNDRESEEDCRNG)));
  } else {
    printf(" seed=none");
  }
  draw("c");
  printf("\n");
  return 0;
}
