/* tftp-client: a TFTP test client that negotiates windowsize (RFC 7440),
 * written for the bootstrap interop tests and the benchmark (tftp-hpa and
 * curl do not speak windowsize).
 *
 *   tftp-client get HOST PORT FILE OUT [--blksize N] [--windowsize N]
 *               [--tsize] [--timeout S] [--drop K] [--dup-acks] [--quiet]
 *       Fetch FILE.  --drop K ignores DATA block K the first time (a loss);
 *       --dup-acks sends every ACK twice and fails if any DATA block then
 *       arrives twice (Sorcerer's Apprentice).  Prints the negotiated
 *       options, bytes, blocks, duplicates and seconds.
 *   tftp-client badinput HOST PORT FILE OUT
 *       Start a lock-step transfer of FILE, send every TFTP bad input of
 *       shared/BAD-INPUTS.md from other sockets while it runs (checking the
 *       error code answered, or silence), then finish the transfer into OUT.
 *
 * Exit status: 0 on success, 1 on a failed check, 2 on usage errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXPKT 65536 + 4

typedef struct {
  unsigned blksize, windowsize, timeout;
  bool tsize, dup_acks, quiet;
  long drop;                  /* block number to lose once, -1 none */
} GetOpts;

typedef struct {
  int fd;
  struct sockaddr_in server;  /* request address, then the transfer TID */
  bool have_tid;
  FILE *out;
  unsigned blksize, windowsize;
  uint64_t tsize;
  uint64_t bytes, blocks, duplicates, gaps;
  uint16_t last;              /* last in-order block received */
  unsigned in_window;
  bool dropped;
} Xfer;

static double
now_s (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
udp_socket (void)
{
  int fd = socket (AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET };
  if (fd < 0 || bind (fd, (struct sockaddr *) &a, sizeof a) < 0)
    {
      perror ("socket");
      exit (2);
    }
  int sz = 4 << 20;
  setsockopt (fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  return fd;
}

static struct sockaddr_in
resolve (const char *host, const char *port)
{
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_port = htons ((uint16_t) atoi (port)) };
  if (inet_pton (AF_INET, host, &a.sin_addr) != 1)
    {
      fprintf (stderr, "tftp-client: %s is not an IPv4 address\n", host);
      exit (2);
    }
  return a;
}

static size_t
put_str (uint8_t *p, const char *s)
{
  size_t n = strlen (s) + 1;
  memcpy (p, s, n);
  return n;
}

static size_t
build_rrq (uint8_t *pkt, const char *file, const GetOpts *o)
{
  size_t n = 2;
  char v[32];
  pkt[0] = 0;
  pkt[1] = 1;
  n += put_str (pkt + n, file);
  n += put_str (pkt + n, "octet");
  if (o->blksize)
    {
      snprintf (v, sizeof v, "%u", o->blksize);
      n += put_str (pkt + n, "blksize");
      n += put_str (pkt + n, v);
    }
  if (o->windowsize)
    {
      snprintf (v, sizeof v, "%u", o->windowsize);
      n += put_str (pkt + n, "windowsize");
      n += put_str (pkt + n, v);
    }
  if (o->timeout)
    {
      snprintf (v, sizeof v, "%u", o->timeout);
      n += put_str (pkt + n, "timeout");
      n += put_str (pkt + n, v);
    }
  if (o->tsize)
    {
      n += put_str (pkt + n, "tsize");
      n += put_str (pkt + n, "0");
    }
  return n;
}

static void
send_ack (Xfer *x, uint16_t block, bool twice)
{
  uint8_t a[4] = { 0, 4, (uint8_t) (block >> 8), (uint8_t) block };
  for (int i = 0; i < (twice ? 2 : 1); i++)
    sendto (x->fd, a, 4, 0, (struct sockaddr *) &x->server, sizeof x->server);
}

/* Received datagrams not yet handed out: recvmmsg fills a batch, so a
 * window costs one system call, not one per block. */
#define BATCH 32
static uint8_t batch_buf[BATCH][MAXPKT];
static struct sockaddr_in batch_from[BATCH];
static unsigned batch_len[BATCH], batch_n, batch_i;

/* Wait up to ms for a packet from the server (any port until the TID is
 * known), copy it to buf.  Returns its length, 0 on timeout. */
static ssize_t
recv_pkt (Xfer *x, uint8_t *buf, int ms)
{
  for (;;)
    {
      if (batch_i == batch_n)
        {
          struct pollfd p = { .fd = x->fd, .events = POLLIN };
          if (poll (&p, 1, ms) <= 0)
            return 0;
          struct mmsghdr mm[BATCH];
          struct iovec iov[BATCH];
          memset (mm, 0, sizeof mm);
          for (unsigned i = 0; i < BATCH; i++)
            {
              iov[i] = (struct iovec) { batch_buf[i], MAXPKT };
              mm[i].msg_hdr.msg_iov = &iov[i];
              mm[i].msg_hdr.msg_iovlen = 1;
              mm[i].msg_hdr.msg_name = &batch_from[i];
              mm[i].msg_hdr.msg_namelen = sizeof batch_from[i];
            }
          int n = recvmmsg (x->fd, mm, BATCH, MSG_DONTWAIT, NULL);
          if (n <= 0)
            continue;
          for (int i = 0; i < n; i++)
            batch_len[i] = mm[i].msg_len;
          batch_n = (unsigned) n;
          batch_i = 0;
        }
      unsigned i = batch_i++;
      if (batch_len[i] < 4)
        continue;
      if (x->have_tid && batch_from[i].sin_port != x->server.sin_port)
        continue;             /* another TID: not ours */
      if (!x->have_tid)
        {
          x->server = batch_from[i];
          x->have_tid = true;
        }
      memcpy (buf, batch_buf[i], batch_len[i]);
      return batch_len[i];
    }
}

/* Parse an OACK into x; false on a value we did not ask for. */
static bool
parse_oack (Xfer *x, const uint8_t *p, size_t n, const GetOpts *o)
{
  const char *s = (const char *) p + 2, *end = (const char *) p + n;
  while (s < end)
    {
      const char *name = s;
      const char *val = name + strnlen (name, end - name) + 1;
      if (val >= end)
        break;
      unsigned long long v = strtoull (val, NULL, 10);
      if (!strcasecmp (name, "blksize"))
        x->blksize = (unsigned) v;
      else if (!strcasecmp (name, "windowsize"))
        x->windowsize = (unsigned) v;
      else if (!strcasecmp (name, "tsize"))
        x->tsize = v;
      s = val + strnlen (val, end - val) + 1;
    }
  return (!o->blksize || x->blksize <= o->blksize)
         && (!o->windowsize || x->windowsize <= o->windowsize);
}

/* One DATA packet; returns 1 when the transfer is complete. */
static int
on_data (Xfer *x, const uint8_t *p, size_t n, const GetOpts *o)
{
  uint16_t block = (uint16_t) ((p[2] << 8) | p[3]);
  size_t len = n - 4;
  if (o->drop >= 0 && !x->dropped && x->blocks + 1 == (uint64_t) o->drop
      && block == (uint16_t) (x->last + 1))
    {
      x->dropped = true;      /* simulate the loss of this block */
      return 0;
    }
  if (block != (uint16_t) (x->last + 1))
    {
      if (block == x->last || (uint16_t) (x->last - block) < 0x8000)
        x->duplicates++;      /* already have it */
      else
        {
          x->gaps++;          /* RFC 7440: ACK the last in-order block */
          send_ack (x, x->last, false);
          x->in_window = 0;
        }
      return 0;
    }
  fwrite (p + 4, 1, len, x->out);
  x->bytes += len;
  x->blocks++;
  x->last = block;
  bool final = len < x->blksize;
  if (++x->in_window >= x->windowsize || final)
    {
      send_ack (x, block, o->dup_acks);
      x->in_window = 0;
    }
  return final ? 1 : 0;
}

static int
do_get (const char *host, const char *port, const char *file,
        const char *outpath, const GetOpts *o)
{
  Xfer x = { .fd = udp_socket (), .server = resolve (host, port),
             .blksize = 512, .windowsize = 1 };
  x.out = fopen (outpath, "wb");
  if (!x.out)
    {
      perror (outpath);
      return 2;
    }
  /* One write(2) per MiB, not one per 4 KiB (two or three blocks). */
  static char outbuf[1 << 20];
  setvbuf (x.out, outbuf, _IOFBF, sizeof outbuf);
  static uint8_t pkt[MAXPKT];
  size_t rn = build_rrq (pkt, file, o);
  double t0 = now_s ();
  sendto (x.fd, pkt, rn, 0, (struct sockaddr *) &x.server, sizeof x.server);
  bool asked = o->blksize || o->windowsize || o->tsize || o->timeout;
  int tries = 0;
  for (;;)
    {
      ssize_t n = recv_pkt (&x, pkt, 1000);
      if (n == 0)
        {
          if (++tries > 8)
            {
              fprintf (stderr, "tftp-client: timed out after block %u\n",
                       x.last);
              return 1;
            }
          send_ack (&x, x.last, false);   /* re-ACK: restart the window */
          continue;
        }
      tries = 0;
      uint16_t op = (uint16_t) ((pkt[0] << 8) | pkt[1]);
      if (op == 5)
        {
          fprintf (stderr, "tftp-client: error %u: %.*s\n",
                   (pkt[2] << 8) | pkt[3], (int) (n - 4), pkt + 4);
          return 1;
        }
      if (op == 6 && asked && x.blocks == 0)
        {
          if (!parse_oack (&x, pkt, (size_t) n, o))
            {
              fprintf (stderr, "tftp-client: OACK raised an option\n");
              return 1;
            }
          send_ack (&x, 0, false);
          continue;
        }
      if (op == 3 && on_data (&x, pkt, (size_t) n, o))
        break;
    }
  double secs = now_s () - t0;
  fclose (x.out);
  /* Linger briefly: with --dup-acks, duplicates would arrive now. */
  for (ssize_t n; o->dup_acks && (n = recv_pkt (&x, pkt, 300)) > 0;)
    if (((pkt[0] << 8) | pkt[1]) == 3)
      x.duplicates++;
  if (!o->quiet)
    printf ("blksize %u windowsize %u tsize %llu: %llu bytes, %llu blocks, "
            "%llu duplicates, %llu gaps in %.3f s (%.1f MiB/s)\n",
            x.blksize, x.windowsize, (unsigned long long) x.tsize,
            (unsigned long long) x.bytes, (unsigned long long) x.blocks,
            (unsigned long long) x.duplicates, (unsigned long long) x.gaps,
            secs, x.bytes / 1048576.0 / (secs > 0 ? secs : 1e-9));
  if (o->tsize && x.tsize != x.bytes)
    {
      fprintf (stderr, "tftp-client: tsize %llu but %llu bytes received\n",
               (unsigned long long) x.tsize, (unsigned long long) x.bytes);
      return 1;
    }
  if (o->dup_acks && x.duplicates)
    {
      fprintf (stderr, "tftp-client: Sorcerer's Apprentice: %llu DATA "
               "blocks sent twice after duplicate ACKs\n",
               (unsigned long long) x.duplicates);
      return 1;
    }
  return 0;
}

/* ---- bad inputs --------------------------------------------------------- */

typedef struct {
  const char *name;
  const uint8_t *pkt;
  size_t len;
  int want;                   /* TFTP error code expected, -1 silence */
} BadCase;

#define P(...) (const uint8_t[]) { __VA_ARGS__ }, sizeof ((const uint8_t[]) { __VA_ARGS__ })

static int
expect (const struct sockaddr_in *srv, const BadCase *c)
{
  int fd = udp_socket ();
  sendto (fd, c->pkt, c->len, 0, (const struct sockaddr *) srv, sizeof *srv);
  struct pollfd p = { .fd = fd, .events = POLLIN };
  uint8_t buf[1024];
  ssize_t n = poll (&p, 1, 400) > 0 ? recv (fd, buf, sizeof buf, 0) : 0;
  close (fd);
  int got = -1;
  if (n >= 4 && buf[1] == 5)
    got = (buf[2] << 8) | buf[3];
  else if (n > 0)
    got = 1000 + buf[1];      /* something else than an ERROR */
  bool ok = got == c->want;
  printf ("%s %s: %s", ok ? "ok  " : "FAIL", c->name,
          got < 0 ? "silence" : got >= 1000 ? "non-error answer" : "error ");
  if (got >= 0 && got < 1000)
    printf ("%d '%.*s'", got, (int) (n - 5 > 0 ? n - 5 : 0), buf + 4);
  printf ("\n");
  return ok ? 0 : 1;
}

static uint8_t *
big_rrq (size_t *len, const char *file, const char *optname, size_t vlen)
{
  static uint8_t pkt[2048];
  size_t n = 2;
  pkt[0] = 0;
  pkt[1] = 1;
  n += put_str (pkt + n, file);
  n += put_str (pkt + n, "octet");
  n += put_str (pkt + n, optname);
  memset (pkt + n, '7', vlen);
  n += vlen;
  pkt[n++] = 0;
  *len = n;
  return pkt;
}

static size_t
rrq_with (uint8_t *pkt, const char *file, const char *name, const char *val)
{
  size_t n = 2;
  pkt[0] = 0;
  pkt[1] = 1;
  n += put_str (pkt + n, file);
  n += put_str (pkt + n, "octet");
  if (name)
    {
      n += put_str (pkt + n, name);
      n += put_str (pkt + n, val);
    }
  return n;
}

static int
do_badinput (const char *host, const char *port, const char *file,
             const char *outpath)
{
  struct sockaddr_in srv = resolve (host, port);
  /* Transfer A: lock-step, 512-byte blocks, driven by hand in between. */
  Xfer a = { .fd = udp_socket (), .server = srv, .blksize = 512,
             .windowsize = 1 };
  a.out = fopen (outpath, "wb");
  static uint8_t pkt[MAXPKT];
  GetOpts none = { .drop = -1 };
  size_t rn = build_rrq (pkt, file, &none);
  sendto (a.fd, pkt, rn, 0, (struct sockaddr *) &srv, sizeof srv);

  uint8_t o1[64], o2[64], o3[64], o4[64], o5[64], o6[64], o7[64], o8[64];
  size_t l1 = rrq_with (o1, file, "blksize", "7");
  size_t l2 = rrq_with (o2, file, "blksize", "65465");
  size_t l3 = rrq_with (o3, file, "timeout", "0");
  size_t l4 = rrq_with (o4, file, "timeout", "256");
  size_t l5 = rrq_with (o5, file, "windowsize", "0");
  size_t l6 = rrq_with (o6, file, "windowsize", "65536");
  size_t l7 = rrq_with (o7, file, "blksize", "12x");
  size_t l8 = rrq_with (o8, "../../../../etc/passwd", NULL, NULL);
  uint8_t o9[64], o10[64], o11[64];
  size_t l9 = rrq_with (o9, "/etc/passwd", NULL, NULL);
  size_t l10 = rrq_with (o10, "no-such-file", NULL, NULL);
  size_t l11 = rrq_with (o11, "escape", NULL, NULL);
  size_t lbig;
  uint8_t *bigv = big_rrq (&lbig, file, "blksize", 600);
  uint8_t big_copy[2048];
  memcpy (big_copy, bigv, lbig);
  uint8_t nonul[16] = { 0, 1, 'u', 'n', 'd', 'i' };
  const BadCase cases[] = {
    { "ERROR of 3 bytes (atftpd CVE-2019-11365)", P (0, 5, 0), -1 },
    { "ERROR of 2 bytes", P (0, 5), -1 },
    { "RRQ without terminating NUL (atftpd CVE-2021-46671)", nonul, 6, 4 },
    { "RRQ with name but no mode", P (0, 1, 'x', 0), 4 },
    { "WRQ refused", P (0, 2, 'x', 0, 'o', 'c', 't', 'e', 't', 0), 2 },
    { "netascii refused", P (0, 1, 'x', 0, 'n', 'e', 't', 'a', 's', 'c', 'i',
                             'i', 0), 0 },
    { "unknown mode", P (0, 1, 'x', 0, 'm', 'a', 'i', 'l', 0), 4 },
    { "unknown opcode 9", P (0, 9, 'x', 0), 4 },
    { "ACK to the request port", P (0, 4, 0, 1), -1 },
    { "blksize 7", o1, l1, 8 },
    { "blksize 65465", o2, l2, 8 },
    { "timeout 0", o3, l3, 8 },
    { "timeout 256", o4, l4, 8 },
    { "windowsize 0", o5, l5, 8 },
    { "windowsize 65536", o6, l6, 8 },
    { "blksize not a number", o7, l7, 8 },
    { "overlong option value (tftpd-hpa CVE-2011-2199)", big_copy, lbig, 8 },
    { "../ out of the root", o8, l8, 2 },
    { "absolute path stays in the root", o9, l9, 1 },
    { "missing file", o10, l10, 1 },
    { "symlink leading out of the root", o11, l11, 2 },
  };
  int fails = 0;
  bool done = false;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    {
      fails += expect (&srv, &cases[i]);
      /* Advance transfer A by one block between the bad inputs. */
      ssize_t n = done ? 0 : recv_pkt (&a, pkt, 2000);
      if (!done && (n < 4 || pkt[1] != 3))
        {
          printf ("FAIL transfer A disturbed at case %zu\n", i);
          return 1;
        }
      if (!done && on_data (&a, pkt, (size_t) n, &none))
        done = true;
    }
  while (!done)
    {
      ssize_t n = recv_pkt (&a, pkt, 2000);
      if (n < 4 || pkt[1] != 3)
        {
          printf ("FAIL transfer A did not finish\n");
          return 1;
        }
      done = on_data (&a, pkt, (size_t) n, &none) == 1;
    }
  fclose (a.out);
  printf ("%s transfer A finished during the bad inputs (%llu bytes)\n",
          fails ? "FAIL" : "ok  ", (unsigned long long) a.bytes);
  return fails ? 1 : 0;
}

static void
usage (void)
{
  fprintf (stderr, "usage: tftp-client get HOST PORT FILE OUT [--blksize N] "
           "[--windowsize N] [--tsize] [--timeout S] [--drop K] [--dup-acks] "
           "[--quiet]\n       tftp-client badinput HOST PORT FILE OUT\n");
  exit (2);
}

int
main (int argc, char **argv)
{
  if (argc < 6)
    usage ();
  if (!strcmp (argv[1], "badinput"))
    return do_badinput (argv[2], argv[3], argv[4], argv[5]);
  if (strcmp (argv[1], "get"))
    usage ();
  GetOpts o = { .drop = -1 };
  for (int i = 6; i < argc; i++)
    {
      bool more = i + 1 < argc;
      if (!strcmp (argv[i], "--blksize") && more)
        o.blksize = (unsigned) atoi (argv[++i]);
      else if (!strcmp (argv[i], "--windowsize") && more)
        o.windowsize = (unsigned) atoi (argv[++i]);
      else if (!strcmp (argv[i], "--timeout") && more)
        o.timeout = (unsigned) atoi (argv[++i]);
      else if (!strcmp (argv[i], "--drop") && more)
        o.drop = atol (argv[++i]);
      else if (!strcmp (argv[i], "--tsize"))
        o.tsize = true;
      else if (!strcmp (argv[i], "--dup-acks"))
        o.dup_acks = true;
      else if (!strcmp (argv[i], "--quiet"))
        o.quiet = true;
      else
        usage ();
    }
  return do_get (argv[2], argv[3], argv[4], argv[5], &o);
}
