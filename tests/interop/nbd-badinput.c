/* nbd-badinput: send every NBD case of BAD-INPUTS.md to a running streamsvc
 * and check the precise answer, while a second connection keeps reading
 * and must keep working.
 *
 *   nbd-badinput ADDR VDISK_EXPORT DEVICE_EXPORT
 *     ADDR: a unix socket path (contains '/') or HOST:PORT
 *
 * Raw sockets on purpose: no NBD library would send these bytes.
 * Exit 0 when every case passed, 1 otherwise.
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define OPTS_MAGIC 0x49484156454f5054ULL
#define REP_MAGIC 0x0003e889045565a9ULL
#define REQ_MAGIC 0x25609513u
#define SIMPLE_MAGIC 0x67446698u
#define STRUCT_MAGIC 0x668e33efu

#define OPT_EXPORT_NAME 1
#define OPT_LIST 3
#define OPT_STARTTLS 5
#define OPT_INFO 6
#define OPT_GO 7
#define OPT_STRUCTURED 8
#define OPT_SET_META 10
#define REP_ACK 1u
#define REP_ERR_UNSUP 0x80000001u
#define REP_ERR_POLICY 0x80000002u
#define REP_ERR_INVALID 0x80000003u
#define REP_ERR_UNKNOWN 0x80000006u

#define CMD_READ 0
#define CMD_WRITE 1
#define CMD_DISC 2
#define CMD_BLOCK_STATUS 7

#define E_PERM 1
#define E_INVAL 22
#define E_NOSPC 28

static const char *addr;
static int failures;
static volatile int stop_reader;

static void
check (bool ok, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  printf ("%s: ", ok ? "ok" : "FAIL");
  vprintf (fmt, ap);
  printf ("\n");
  va_end (ap);
  fflush (stdout);
  if (!ok)
    failures++;
}

static void
put16 (uint8_t *p, uint16_t v)
{
  p[0] = v >> 8; p[1] = v;
}
static void
put32 (uint8_t *p, uint32_t v)
{
  put16 (p, v >> 16); put16 (p + 2, v);
}
static void
put64 (uint8_t *p, uint64_t v)
{
  put32 (p, v >> 32); put32 (p + 4, v);
}
static uint32_t
get32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | p[2] << 8 | p[3];
}
static uint64_t
get64 (const uint8_t *p)
{
  return (uint64_t) get32 (p) << 32 | get32 (p + 4);
}

static int
dial (void)
{
  int fd;
  struct timeval tv = { 10, 0 };

  if (strchr (addr, '/') != NULL)
    {
      struct sockaddr_un sun = { .sun_family = AF_UNIX };
      snprintf (sun.sun_path, sizeof sun.sun_path, "%s", addr);
      fd = socket (AF_UNIX, SOCK_STREAM, 0);
      if (connect (fd, (struct sockaddr *) &sun, sizeof sun) < 0)
        {
          perror (addr);
          exit (1);
        }
    }
  else
    {
      char host[256];
      const char *colon = strrchr (addr, ':');
      struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
      snprintf (host, sizeof host, "%.*s", (int) (colon - addr), addr);
      if (colon == NULL || getaddrinfo (host, colon + 1, &hints, &res) != 0)
        {
          fprintf (stderr, "bad address %s\n", addr);
          exit (1);
        }
      fd = socket (res->ai_family, SOCK_STREAM, 0);
      if (connect (fd, res->ai_addr, res->ai_addrlen) < 0)
        {
          perror (addr);
          exit (1);
        }
      freeaddrinfo (res);
    }
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

static bool
send_all (int fd, const void *buf, size_t len)
{
  const uint8_t *p = buf;
  while (len > 0)
    {
      ssize_t n = send (fd, p, len, MSG_NOSIGNAL);
      if (n <= 0)
        return false;
      p += n;
      len -= n;
    }
  return true;
}

/* Read exactly len bytes; false on EOF / error / timeout. */
static bool
recv_all (int fd, void *buf, size_t len)
{
  uint8_t *p = buf;
  while (len > 0)
    {
      ssize_t n = recv (fd, p, len, 0);
      if (n <= 0)
        return false;
      p += n;
      len -= n;
    }
  return true;
}

/* True when the server closed the connection (EOF within the timeout). */
static bool
closed_by_server (int fd)
{
  uint8_t b[4096];
  for (;;)
    {
      ssize_t n = recv (fd, b, sizeof b, 0);
      if (n == 0 || (n < 0 && errno == ECONNRESET))
        return true;
      if (n < 0)
        return false; /* timeout: still open */
    }
}

/* Connect and do the fixed newstyle greeting. */
static int
handshake (uint32_t client_flags)
{
  int fd = dial ();
  uint8_t g[18], f[4];

  if (!recv_all (fd, g, sizeof g) || get64 (g + 8) != OPTS_MAGIC)
    {
      check (false, "greeting");
      exit (1);
    }
  put32 (f, client_flags);
  send_all (fd, f, 4);
  return fd;
}

static void
send_opt (int fd, uint32_t opt, const void *data, uint32_t len,
          uint32_t claimed_len)
{
  uint8_t h[16];
  put64 (h, OPTS_MAGIC);
  put32 (h + 8, opt);
  put32 (h + 12, claimed_len);
  send_all (fd, h, 16);
  if (len)
    send_all (fd, data, len);
}

/* Read option replies until a non-INFO/SERVER/META one; returns its type
 * (0 on EOF).  The message of an error reply lands in msg. */
static uint32_t
opt_result (int fd, char *msg, size_t msgsize)
{
  for (;;)
    {
      uint8_t h[20];
      uint32_t type, len;
      char buf[8192];

      if (!recv_all (fd, h, 20) || get64 (h) != REP_MAGIC)
        return 0;
      type = get32 (h + 12);
      len = get32 (h + 16);
      if (len > sizeof buf || !recv_all (fd, buf, len))
        return 0;
      if (type >= 2 && type <= 4)
        continue;
      if (msg != NULL)
        snprintf (msg, msgsize, "%.*s", (int) len, buf);
      return type;
    }
}

/* NBD_OPT_GO body for name with no info requests. */
static size_t
go_body (uint8_t *b, const char *name)
{
  uint32_t n = strlen (name);
  put32 (b, n);
  memcpy (b + 4, name, n);
  put16 (b + 4 + n, 0);
  return 6 + n;
}

static int
open_export (const char *name, bool structured)
{
  int fd = handshake (3);
  uint8_t b[512];

  if (structured)
    {
      send_opt (fd, OPT_STRUCTURED, NULL, 0, 0);
      if (opt_result (fd, NULL, 0) != REP_ACK)
        check (false, "structured reply refused");
    }
  send_opt (fd, OPT_GO, b, go_body (b, name), go_body (b, name));
  if (opt_result (fd, NULL, 0) != REP_ACK)
    {
      check (false, "NBD_OPT_GO %s", name);
      exit (1);
    }
  return fd;
}

static void
send_req (int fd, uint16_t flags, uint16_t type, uint64_t cookie,
          uint64_t off, uint32_t len)
{
  uint8_t r[28];
  put32 (r, REQ_MAGIC);
  put16 (r + 4, flags);
  put16 (r + 6, type);
  put64 (r + 8, cookie);
  put64 (r + 16, off);
  put32 (r + 24, len);
  send_all (fd, r, 28);
}

/* Simple reply: error, or -1 on EOF / bad magic / wrong cookie. */
static int
simple_reply (int fd, uint64_t cookie, void *data, uint32_t len)
{
  uint8_t h[16];
  uint32_t err;

  if (!recv_all (fd, h, 16) || get32 (h) != SIMPLE_MAGIC
      || get64 (h + 8) != cookie)
    return -1;
  err = get32 (h + 4);
  if (err == 0 && len > 0 && !recv_all (fd, data, len))
    return -1;
  return (int) err;
}

/* ---- the reader that must keep working -------------------------------- */

static const char *vdisk_export;
static long reader_ok, reader_bad;

static void *
reader_main (void *unused)
{
  (void) unused;
  int fd = open_export (vdisk_export, false);
  static uint8_t first[65536], buf[65536];
  uint64_t cookie = 1;

  send_req (fd, 0, CMD_READ, cookie, 0, sizeof first);
  if (simple_reply (fd, cookie, first, sizeof first) != 0)
    reader_bad++;
  while (!stop_reader)
    {
      cookie++;
      send_req (fd, 0, CMD_READ, cookie, 0, sizeof buf);
      if (simple_reply (fd, cookie, buf, sizeof buf) != 0
          || memcmp (buf, first, sizeof buf) != 0)
        {
          reader_bad++;
          break;
        }
      reader_ok++;
    }
  send_req (fd, 0, CMD_DISC, 0, 0, 0);
  close (fd);
  return NULL;
}

/* ---- handshake cases ------------------------------------------------------ */

static void
case_name_len_exceeds_option (void)
{
  int fd = handshake (3);
  uint8_t b[16];
  char msg[512];

  put32 (b, 100); /* name length 100, but only 6 bytes follow */
  memcpy (b + 4, "ab", 2);
  put16 (b + 6, 0);
  send_opt (fd, OPT_INFO, b, 8, 8);
  check (opt_result (fd, msg, sizeof msg) == REP_ERR_INVALID,
         "INFO name length > option length -> NBD_REP_ERR_INVALID (%s)", msg);
  send_opt (fd, OPT_GO, b, 8, 8);
  check (opt_result (fd, msg, sizeof msg) == REP_ERR_INVALID,
         "GO name length > option length -> NBD_REP_ERR_INVALID");
  put32 (b, 0xffffffffu);
  send_opt (fd, OPT_GO, b, 8, 8);
  check (opt_result (fd, msg, sizeof msg) == REP_ERR_INVALID,
         "GO name length 0xFFFFFFFF -> NBD_REP_ERR_INVALID (%s)", msg);
  send_opt (fd, OPT_LIST, NULL, 0, 0);
  check (opt_result (fd, NULL, 0) == REP_ACK, "connection still negotiates");
  close (fd);
}

static void
case_long_names (void)
{
  static uint8_t b[8200];
  int fd = handshake (3);
  char msg[512];

  put32 (b, 5000);
  memset (b + 4, 'x', 5000);
  put16 (b + 5004, 0);
  send_opt (fd, OPT_GO, b, 5006, 5006);
  check (opt_result (fd, msg, sizeof msg) == REP_ERR_INVALID,
         "GO with a 5000-byte name -> NBD_REP_ERR_INVALID (%s)", msg);
  send_opt (fd, OPT_EXPORT_NAME, b + 4, 5000, 5000);
  check (closed_by_server (fd), "EXPORT_NAME with a 5000-byte name -> close");
  close (fd);
}

static void
case_info_count (void)
{
  int fd = handshake (3);
  uint8_t b[64];
  size_t n = go_body (b, vdisk_export);

  put16 (b + n - 2, 3); /* claims 3 info requests, sends 1 */
  put16 (b + n, 1);
  send_opt (fd, OPT_INFO, b, n + 2, n + 2);
  check (opt_result (fd, NULL, 0) == REP_ERR_INVALID,
         "INFO with a wrong request count -> NBD_REP_ERR_INVALID");
  close (fd);
}

static void
case_huge_option (void)
{
  int fd = handshake (3);
  send_opt (fd, 99, "xxxx", 4, 0x7fffffffu);
  check (closed_by_server (fd), "option length 2 GiB -> close");
  close (fd);
}

static void
case_misc_options (void)
{
  int fd = handshake (3);
  char msg[512];
  uint8_t b[64];

  send_opt (fd, 4242, "abc", 3, 3);
  check (opt_result (fd, NULL, 0) == REP_ERR_UNSUP,
         "unknown option -> NBD_REP_ERR_UNSUP");
  send_opt (fd, OPT_LIST, "x", 1, 1);
  check (opt_result (fd, NULL, 0) == REP_ERR_INVALID,
         "LIST with data -> NBD_REP_ERR_INVALID");
  send_opt (fd, OPT_STARTTLS, NULL, 0, 0);
  check (opt_result (fd, NULL, 0) == REP_ERR_POLICY,
         "STARTTLS -> NBD_REP_ERR_POLICY (no TLS configured)");
  send_opt (fd, OPT_GO, b, go_body (b, "vdisk/no-such-disk"),
            go_body (b, "vdisk/no-such-disk"));
  check (opt_result (fd, msg, sizeof msg) == REP_ERR_UNKNOWN
         && strstr (msg, "no-such-disk") != NULL,
         "unknown export -> NBD_REP_ERR_UNKNOWN naming it (%s)", msg);
  send_opt (fd, OPT_SET_META, NULL, 0, 0);
  check (opt_result (fd, NULL, 0) == REP_ERR_INVALID,
         "SET_META_CONTEXT before STRUCTURED_REPLY -> NBD_REP_ERR_INVALID");
  close (fd);
}

static void
case_request_before_go (void)
{
  int fd = handshake (3);
  send_req (fd, 0, CMD_READ, 1, 0, 512);
  check (closed_by_server (fd), "READ before negotiation ended -> close");
  close (fd);
}

static void
case_bad_client_flags (void)
{
  int fd = handshake (0x80000001u);
  check (closed_by_server (fd), "unknown client flags -> close");
  close (fd);
}

/* ---- transmission cases ---------------------------------------------------- */

static uint64_t
export_size (const char *name)
{
  int fd = handshake (3);
  uint8_t b[512], h[20], d[64];
  uint64_t size = 0;

  send_opt (fd, OPT_INFO, b, go_body (b, name), go_body (b, name));
  for (;;)
    {
      uint32_t len;
      if (!recv_all (fd, h, 20))
        break;
      len = get32 (h + 16);
      if (len > sizeof d || !recv_all (fd, d, len))
        break;
      if (get32 (h + 12) == 3 && d[0] == 0 && d[1] == 0)
        size = get64 (d + 2);
      if (get32 (h + 12) != 3)
        break;
    }
  close (fd);
  return size;
}

static void
case_transmission_vdisk (void)
{
  uint64_t size = export_size (vdisk_export);
  int fd = open_export (vdisk_export, false);
  static uint8_t buf[8192];

  check (size > 0, "vdisk size %llu", (unsigned long long) size);
  send_req (fd, 0, CMD_READ, 1, size - 512, 1024);
  check (simple_reply (fd, 1, NULL, 0) == E_INVAL, "read past the end -> EINVAL");
  send_req (fd, 0, CMD_READ, 2, UINT64_MAX - 100, 512);
  check (simple_reply (fd, 2, NULL, 0) == E_INVAL, "read at offset 2^64-101 -> EINVAL");
  send_req (fd, 0, CMD_READ, 3, 0, 0);
  check (simple_reply (fd, 3, NULL, 0) == E_INVAL, "zero-length read -> EINVAL");
  send_req (fd, 0x8000, CMD_READ, 4, 0, 512);
  check (simple_reply (fd, 4, NULL, 0) == E_INVAL, "unknown flag -> EINVAL");
  send_req (fd, 0, 99, 5, 0, 512);
  check (simple_reply (fd, 5, NULL, 0) == E_INVAL, "unknown command -> EINVAL");
  send_req (fd, 0, CMD_READ, 6, 0, 64u << 20);
  check (simple_reply (fd, 6, NULL, 0) == E_INVAL, "64 MiB read -> EINVAL");
  send_req (fd, 0, CMD_WRITE, 7, 0, 4096);
  send_all (fd, buf, 4096);
  check (simple_reply (fd, 7, NULL, 0) == E_PERM, "write to read-only vdisk -> EPERM");
  send_req (fd, 0, CMD_BLOCK_STATUS, 8, 0, 4096);
  check (simple_reply (fd, 8, NULL, 0) == E_INVAL,
         "BLOCK_STATUS without a meta context -> EINVAL");
  send_req (fd, 0, CMD_READ, 9, 1, 3);
  check (simple_reply (fd, 9, buf, 3) == 0, "unaligned 3-byte read at offset 1 -> ok");
  /* Several requests in flight at once. */
  for (int i = 0; i < 16; i++)
    send_req (fd, 0, CMD_READ, 100 + i, (uint64_t) i * 4096, 4096);
  int good = 0;
  for (int i = 0; i < 16; i++)
    good += simple_reply (fd, 100 + i, buf, 4096) == 0;
  check (good == 16, "16 pipelined reads all answered in order (%d)", good);
  send_req (fd, 0, CMD_DISC, 10, 0, 0);
  check (closed_by_server (fd), "NBD_CMD_DISC -> close");
  close (fd);
}

static void
case_structured_read_error (void)
{
  int fd = open_export (vdisk_export, true);
  uint8_t h[20], p[256];

  send_req (fd, 0, CMD_READ, 1, 0, 0);
  bool ok = recv_all (fd, h, 20) && get32 (h) == STRUCT_MAGIC
            && (h[4] << 8 | h[5]) == 1 /* DONE */
            && (h[6] << 8 | h[7]) == 0x8001 /* ERROR */
            && get32 (h + 16) <= sizeof p && recv_all (fd, p, get32 (h + 16))
            && get32 (p) == E_INVAL;
  check (ok, "structured zero-length read -> ERROR chunk EINVAL");
  close (fd);
}

static void
case_transmission_device (const char *device)
{
  uint64_t size = export_size (device);
  int fd = open_export (device, false);
  static uint8_t buf[65536], back[65536];

  memset (buf, 0x5a, sizeof buf);
  /* Out-of-range write: the payload must be skipped, not parsed. */
  send_req (fd, 0, CMD_WRITE, 1, size - 4096, 65536);
  send_all (fd, buf, 65536);
  check (simple_reply (fd, 1, NULL, 0) == E_NOSPC,
         "write past the end -> ENOSPC, payload skipped");
  send_req (fd, 0x8000, CMD_WRITE, 2, 0, 4096);
  send_all (fd, buf, 4096);
  check (simple_reply (fd, 2, NULL, 0) == E_INVAL,
         "write with an unknown flag -> EINVAL, payload skipped");
  send_req (fd, 0, CMD_WRITE, 3, 8192, 4096);
  send_all (fd, buf, 4096);
  check (simple_reply (fd, 3, NULL, 0) == 0, "good write after bad ones");
  send_req (fd, 0, CMD_READ, 4, 8192, 4096);
  check (simple_reply (fd, 4, back, 4096) == 0 && memcmp (back, buf, 4096) == 0,
         "read back what was written");
  send_req (fd, 0, CMD_WRITE, 5, 0, 64u << 20);
  check (closed_by_server (fd), "64 MiB write payload -> close");
  close (fd);
}

/* SET_META_CONTEXT chosen for export A must not carry over when the
 * client then enters transmission on export B with NBD_OPT_EXPORT_NAME:
 * BLOCK_STATUS on B has no context and fails with EINVAL. */
static void
case_meta_context_other_export (const char *other)
{
  int fd = handshake (3);
  uint8_t b[512];
  uint32_t n = strlen (vdisk_export), q = strlen ("base:allocation");

  send_opt (fd, OPT_STRUCTURED, NULL, 0, 0);
  check (opt_result (fd, NULL, 0) == REP_ACK, "structured replies");
  put32 (b, n);
  memcpy (b + 4, vdisk_export, n);
  put32 (b + 4 + n, 1);
  put32 (b + 8 + n, q);
  memcpy (b + 12 + n, "base:allocation", q);
  send_opt (fd, OPT_SET_META, b, 12 + n + q, 12 + n + q);
  check (opt_result (fd, NULL, 0) == REP_ACK, "SET_META_CONTEXT for %s",
         vdisk_export);
  /* EXPORT_NAME has no reply header: size (8) + flags (2), no zeroes. */
  send_opt (fd, OPT_EXPORT_NAME, other, strlen (other), strlen (other));
  uint8_t r[10], h[20], p[256];
  check (recv_all (fd, r, 10), "EXPORT_NAME %s", other);
  send_req (fd, 0, CMD_BLOCK_STATUS, 1, 0, 4096);
  bool ok = recv_all (fd, h, 20) && get32 (h) == STRUCT_MAGIC
            && (h[6] << 8 | h[7]) == 0x8001 && get32 (h + 16) <= sizeof p
            && recv_all (fd, p, get32 (h + 16)) && get32 (p) == E_INVAL;
  check (ok, "meta context of another export not used after EXPORT_NAME");
  close (fd);
}

int
main (int argc, char **argv)
{
  pthread_t reader;

  if (argc != 4)
    {
      fprintf (stderr, "usage: %s ADDR VDISK_EXPORT DEVICE_EXPORT\n", argv[0]);
      return 2;
    }
  addr = argv[1];
  vdisk_export = argv[2];
  pthread_create (&reader, NULL, reader_main, NULL);
  usleep (100 * 1000);

  case_name_len_exceeds_option ();
  case_long_names ();
  case_info_count ();
  case_huge_option ();
  case_misc_options ();
  case_request_before_go ();
  case_bad_client_flags ();
  case_transmission_vdisk ();
  case_structured_read_error ();
  case_transmission_device (argv[3]);
  case_meta_context_other_export (argv[3]);

  long before = reader_ok;
  usleep (200 * 1000);
  check (reader_ok > before, "reader connection still served after the cases");
  stop_reader = 1;
  pthread_join (reader, NULL);
  check (reader_bad == 0 && reader_ok > 0,
         "second connection kept reading: %ld good reads, %ld bad", reader_ok,
         reader_bad);
  printf ("%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
