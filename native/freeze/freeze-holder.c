/*
 * imgmount-freeze: holds one filesystem frozen (FIFREEZE, as fsfreeze(8) does) for
 * `imgbackup --freeze`, and thaws it (FITHAW) on every way out, imgbackup's death included.
 * Node has no ioctl; and a freeze outlives the process that made it, so whoever thaws must not
 * die with imgbackup: this separate process is both the freezer and the watchdog.
 *
 *   imgmount-freeze [--wait] [--drop-after PATH] MOUNTPOINT MAJOR:MINOR TIMEOUT_MS [SOURCE]
 *   imgmount-freeze --thaw MOUNTPOINT MAJOR:MINOR
 *
 * MOUNTPOINT must be the filesystem of device MAJOR:MINOR (checked with fstat after opening it:
 * another filesystem mounted over it would otherwise be frozen instead).
 * Protocol: stdin and stdout are pipes from and to imgbackup.
 *   -> "frozen MS\n" once frozen (MS: how long the FIFREEZE call took, writers already waiting),
 *      or "error ERRNO-NAME text\n" and exit 1 (nothing frozen)
 *   <- "thaw\n", or end of file (imgbackup exited or was killed, however)
 *   -> "thawed REASON\n", REASON one of asked, parent-gone, timeout, signal; exit 0
 * TIMEOUT_MS > 0 thaws by itself after that long (imgbackup then fails the backup); 0: no limit.
 * SIGTERM, SIGINT and SIGHUP thaw too. After the freeze, SOURCE (the device or file imgbackup
 * reads) has its clean cached pages dropped (posix_fadvise DONTNEED): the filesystem writes file
 * data around the device's page cache, which could otherwise hold older copies of those blocks.
 * Before FIFREEZE, syncfs() writes back what is dirty while writers still run (FIFREEZE makes
 * them wait for its own sync).
 * --wait: started ahead of time (`imgbackup --live` starts it while it reads the volume before
 * its short freeze, so the freeze does not wait for a process to start): after the checks it
 * says "ready\n" and freezes only on "freeze\n"; end of file first: exits 0, nothing frozen.
 * --drop-after PATH: once thawed because asked (after the "thawed" line), drops PATH's clean
 * cached pages before it exits (`imgbackup --live` does that after its short freeze, before it
 * reads file data; see src/backup/live/); "drop-failed\n" if it could not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_signal = 0;
static void on_signal(int s) { got_signal = s; }

/* One line to imgbackup; it may be gone (EPIPE is ignored). */
static void say(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n >= (int)sizeof buf) n = sizeof buf - 1;
  ssize_t w = write(1, buf, (size_t)n);
  (void)w;
}

static const char *errname(int e) {
  switch (e) {
    case EPERM: return "EPERM"; case EACCES: return "EACCES"; case EBUSY: return "EBUSY";
    case EINVAL: return "EINVAL"; case EOPNOTSUPP: return "EOPNOTSUPP"; case ENOTTY: return "ENOTTY";
    case ENOENT: return "ENOENT"; case ENOTDIR: return "ENOTDIR"; case EXDEV: return "EXDEV";
    case EROFS: return "EROFS"; case EIO: return "EIO";
    default: return "EOTHER";
  }
}

/* Opens MOUNTPOINT and checks it is the filesystem of MAJOR:MINOR; exits with an error line if not. */
static int open_checked(const char *mp, const char *devspec) {
  unsigned maj, min;
  if (sscanf(devspec, "%u:%u", &maj, &min) != 2) { say("error EINVAL bad device %s\n", devspec); exit(1); }
  int fd = open(mp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) { int e = errno; say("error %s %s: %s\n", errname(e), mp, strerror(e)); exit(1); }
  struct stat st;
  if (fstat(fd, &st) < 0) { int e = errno; say("error %s %s: %s\n", errname(e), mp, strerror(e)); exit(1); }
  if (major(st.st_dev) != maj || minor(st.st_dev) != min) {
    say("error EXDEV %s is not the filesystem of device %u:%u (another one is mounted over it?)\n", mp, maj, min);
    exit(1);
  }
  return fd;
}

/* FITHAW, retried a little on a transient failure. 0 thawed, 1 was not frozen, -1 failed. */
static int thaw(int fd) {
  for (int i = 0; i < 50; i++) {
    if (ioctl(fd, FITHAW, 0) == 0) return 0;
    if (errno == EINVAL) return 1;
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return -1;
}

/* Drops PATH's clean cached pages (posix_fadvise DONTNEED). 0, or -1 if it could not. */
static int drop_cached(const char *path) {
  int s = open(path, O_RDONLY | O_CLOEXEC);
  if (s < 0) return -1;
  int r = posix_fadvise(s, 0, 0, POSIX_FADV_DONTNEED);
  close(s);
  return r == 0 ? 0 : -1;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 4 && strcmp(argv[1], "--thaw") == 0) {
    int fd = open_checked(argv[2], argv[3]);
    int r = thaw(fd);
    if (r < 0) { int e = errno; say("error %s thaw %s: %s\n", errname(e), argv[2], strerror(e)); return 1; }
    say(r == 0 ? "thawed asked\n" : "thawed asked not-frozen\n");
    return 0;
  }
  int wait_for_go = 0;
  const char *drop_after = NULL;
  for (;;) {
    if (argc > 1 && strcmp(argv[1], "--wait") == 0) { wait_for_go = 1; argv++; argc--; }
    else if (argc > 2 && strcmp(argv[1], "--drop-after") == 0) { drop_after = argv[2]; argv += 2; argc -= 2; }
    else break;
  }
  if (argc < 4 || argc > 5) {
    say("error EINVAL usage: imgmount-freeze [--wait] [--drop-after PATH] MOUNTPOINT MAJOR:MINOR TIMEOUT_MS [SOURCE] | --thaw MOUNTPOINT MAJOR:MINOR\n");
    return 2;
  }
  const char *mp = argv[1];
  char *end;
  long long timeout_ms = strtoll(argv[3], &end, 10);
  if (*end != '\0' || timeout_ms < 0) { say("error EINVAL bad timeout %s\n", argv[3]); return 2; }

  /* signals are blocked except while waiting in ppoll, so none is missed between checks */
  sigset_t block, waitmask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM); sigaddset(&block, SIGINT); sigaddset(&block, SIGHUP);
  sigprocmask(SIG_BLOCK, &block, &waitmask);
  sigdelset(&waitmask, SIGTERM); sigdelset(&waitmask, SIGINT); sigdelset(&waitmask, SIGHUP);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL); sigaction(SIGINT, &sa, NULL); sigaction(SIGHUP, &sa, NULL);

  int fd = open_checked(mp, argv[2]);
  if (wait_for_go) {
    say("ready\n");
    char line[64];
    size_t have = 0;
    for (;;) {
      if (got_signal) return 0;
      struct pollfd p = {0, POLLIN, 0};
      int r = ppoll(&p, 1, NULL, &waitmask);
      if (r < 0) { if (errno == EINTR) continue; return 0; }
      ssize_t n = read(0, line + have, sizeof line - 1 - have);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) return 0; /* imgbackup is gone or changed its mind: nothing was frozen */
      have += (size_t)n;
      line[have] = '\0';
      if (strchr(line, '\n')) break;
      if (have >= sizeof line - 1) return 0;
    }
  }
  syncfs(fd); /* best effort: FIFREEZE syncs again, with writers waiting */
  struct timespec f0, f1;
  clock_gettime(CLOCK_MONOTONIC, &f0);
  if (ioctl(fd, FIFREEZE, 0) < 0) {
    int e = errno;
    say("error %s freeze %s: %s\n", errname(e), mp, e == EBUSY ? "already frozen (by someone else)" : strerror(e));
    return 1;
  }
  if (argc == 5) drop_cached(argv[4]);
  clock_gettime(CLOCK_MONOTONIC, &f1);
  long long start = now_ms();
  say("frozen %.1f\n", (double)(f1.tv_sec - f0.tv_sec) * 1e3 + (double)(f1.tv_nsec - f0.tv_nsec) / 1e6);

  const char *reason = NULL;
  while (!reason) {
    if (got_signal) { reason = "signal"; break; }
    struct timespec wait, *waitp = NULL;
    if (timeout_ms > 0) {
      long long left = timeout_ms - (now_ms() - start);
      if (left <= 0) { reason = "timeout"; break; }
      wait.tv_sec = left / 1000;
      wait.tv_nsec = (left % 1000) * 1000000;
      waitp = &wait;
    }
    struct pollfd p = {0, POLLIN, 0};
    int r = ppoll(&p, 1, waitp, &waitmask);
    if (r < 0) { if (errno == EINTR) continue; reason = "parent-gone"; break; }
    if (r == 0) continue;
    char buf[64];
    ssize_t n = read(0, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) { reason = "parent-gone"; break; }
    if (memchr(buf, 't', (size_t)n)) reason = "asked";
  }
  int r = thaw(fd);
  if (r < 0) { int e = errno; say("error %s thaw %s: %s\n", errname(e), mp, strerror(e)); return 1; }
  say(r == 0 ? "thawed %s\n" : "thawed %s not-frozen\n", reason);
  if (drop_after && strcmp(reason, "asked") == 0 && drop_cached(drop_after) < 0) say("drop-failed\n");
  return 0;
}
