/* boot-storm: N simulated targets boot at once, each on its own NBD or
 * iSCSI connection, each replaying the same boot trace in order.
 *
 * Usage: boot-storm --trace FILE --count N --url TEMPLATE
 *                   [--think-scale F] [--deadline SECONDS] [--hold-ms MS]
 *
 * TEMPLATE holds one %d, replaced by the target number 1..N:
 *   nbd://127.0.0.1:10809/device/t%d        (libnbd)
 *   iscsi://127.0.0.1:3260/iqn.2026-11.org.diskfarm:t%d/1   (libiscsi)
 *
 * Trace (tests/bench/traces/README): one request a line, "t_us op offset
 * length", op R (read), W (write), F (flush), T (trim); '#' starts a
 * comment.  Each target replays the lines in order, one request at a time,
 * and before each request sleeps until t_us * think-scale after its own
 * start when that time is still ahead (think time; 0 replays flat out).
 *
 * Phases: every target connects (connect time counts, a failed connect is
 * a failure), then prints "connected N" on stdout and holds --hold-ms so
 * the caller can sample the server's memory; then all start their boots
 * together; when all are done "booted" is printed and held again; then the
 * connections close and one line of results is printed:
 *   targets= failures= connect_s= wall_s= requests= bytes=
 *   req_p50_us= req_p99_us= boot_p50_ms= boot_p99_ms=
 * A target still replaying at --deadline (default 120 s after start)
 * stops there and counts a failure; a request the server never answers
 * blocks its target (the sync APIs have no per-request timeout), so the
 * caller bounds the whole run (storm-bench.sh: timeout(1) per phase).
 * Exit 0 when failures=0, 1 otherwise, 2 on bad usage. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <libnbd.h>

#define MAX_CHUNK (256 * 1024) /* requests split to this size */

enum op
{
  OP_READ,
  OP_WRITE,
  OP_FLUSH,
  OP_TRIM
};

struct req
{
  uint64_t t_us;
  enum op op;
  uint64_t offset;
  uint32_t length;
};

struct trace
{
  struct req *reqs;
  size_t n;
};

struct options
{
  const char *trace_path;
  const char *url;
  int count;
  double think_scale;
  double deadline_s;
  int hold_ms;
};

/* One simulated target.  Owned by the main thread's array; the thread
 * fills the results. */
struct target
{
  int number;
  pthread_t thread;
  struct nbd_handle *nbd;
  struct iscsi_context *iscsi;
  int lun;
  uint32_t block_size;
  bool connected;
  uint64_t *lat_us; /* one per request, trace->n */
  size_t done;
  uint64_t boot_us;
  uint64_t bytes;
  int failures;
};

static struct options opt
    = { .think_scale = 1.0, .deadline_s = 120, .hold_ms = 0 };
static struct trace trace;
static pthread_barrier_t connected_barrier, start_barrier, booted_barrier;
static uint64_t t_start_us; /* of the program */
static char *payload;       /* written by W requests; MAX_CHUNK bytes */

static uint64_t
now_us (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool
past_deadline (void)
{
  return now_us () - t_start_us > (uint64_t)(opt.deadline_s * 1e6);
}

static void
sleep_until_us (uint64_t when)
{
  uint64_t n = now_us ();
  if (when <= n)
    return;
  uint64_t d = when - n;
  struct timespec ts = { d / 1000000, (d % 1000000) * 1000 };
  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

static int
parse_op (char c, enum op *op)
{
  switch (c)
    {
    case 'R':
      *op = OP_READ;
      return 0;
    case 'W':
      *op = OP_WRITE;
      return 0;
    case 'F':
      *op = OP_FLUSH;
      return 0;
    case 'T':
      *op = OP_TRIM;
      return 0;
    default:
      return -1;
    }
}

/* Reads the trace at PATH into trace; exits with a one-line error. */
static void
load_trace (const char *path)
{
  FILE *f = fopen (path, "r");
  if (!f)
    {
      fprintf (stderr, "boot-storm: %s: %s\n", path, strerror (errno));
      exit (2);
    }
  char line[256];
  size_t cap = 0, lineno = 0;
  while (fgets (line, sizeof line, f))
    {
      lineno++;
      if (line[0] == '#' || line[0] == '\n')
        continue;
      struct req r;
      char opc;
      if (sscanf (line, "%" SCNu64 " %c %" SCNu64 " %" SCNu32, &r.t_us, &opc,
                  &r.offset, &r.length)
              != 4
          || parse_op (opc, &r.op) < 0 || (r.op != OP_FLUSH && r.length == 0))
        {
          fprintf (
              stderr,
              "boot-storm: %s:%zu: expected \"t_us R|W|F|T offset length\"\n",
              path, lineno);
          exit (2);
        }
      if (trace.n == cap)
        {
          cap = cap ? cap * 2 : 1024;
          trace.reqs = realloc (trace.reqs, cap * sizeof *trace.reqs);
          if (!trace.reqs)
            abort ();
        }
      trace.reqs[trace.n++] = r;
    }
  fclose (f);
  if (trace.n == 0)
    {
      fprintf (stderr, "boot-storm: %s: no requests\n", path);
      exit (2);
    }
}

/* ---- NBD ---- */

static int
nbd_target_connect (struct target *t, const char *url)
{
  t->nbd = nbd_create ();
  if (!t->nbd || nbd_connect_uri (t->nbd, url) == -1)
    {
      fprintf (stderr, "boot-storm: target %d: %s\n", t->number,
               nbd_get_error ());
      return -1;
    }
  return 0;
}

static int
nbd_target_do (struct target *t, const struct req *r, char *buf)
{
  switch (r->op)
    {
    case OP_READ:
      return nbd_pread (t->nbd, buf, r->length, r->offset, 0);
    case OP_WRITE:
      return nbd_pwrite (t->nbd, payload, r->length, r->offset, 0);
    case OP_FLUSH:
      return nbd_flush (t->nbd, 0);
    case OP_TRIM:
      return nbd_trim (t->nbd, r->length, r->offset, 0);
    }
  return -1;
}

/* ---- iSCSI ---- */

static int
iscsi_target_connect (struct target *t, const char *url)
{
  char iqn[128];
  snprintf (iqn, sizeof iqn, "iqn.2026-11.org.diskfarm.bench:storm-%d",
            t->number);
  t->iscsi = iscsi_create_context (iqn);
  if (!t->iscsi)
    return -1;
  struct iscsi_url *u = iscsi_parse_full_url (t->iscsi, url);
  if (!u)
    goto fail;
  iscsi_set_targetname (t->iscsi, u->target);
  iscsi_set_session_type (t->iscsi, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest (t->iscsi, ISCSI_HEADER_DIGEST_NONE);
  t->lun = u->lun;
  int rc = iscsi_full_connect_sync (t->iscsi, u->portal, u->lun);
  iscsi_destroy_url (u);
  if (rc != 0)
    goto fail;
  struct scsi_task *task = iscsi_readcapacity16_sync (t->iscsi, t->lun);
  struct scsi_readcapacity16 *rc16 = NULL;
  if (task && task->status == SCSI_STATUS_GOOD)
    rc16 = scsi_datain_unmarshall (task);
  if (!rc16)
    {
      if (task)
        scsi_free_scsi_task (task);
      goto fail;
    }
  t->block_size = rc16->block_length;
  scsi_free_scsi_task (task);
  return 0;
fail:
  fprintf (stderr, "boot-storm: target %d: %s\n", t->number,
           iscsi_get_error (t->iscsi));
  return -1;
}

static int
iscsi_target_do (struct target *t, const struct req *r, char *buf)
{
  uint32_t bs = t->block_size;
  if (r->op != OP_FLUSH && (r->offset % bs || r->length % bs))
    return -1;
  uint64_t lba = r->offset / bs;
  uint32_t blocks = r->length / bs;
  struct scsi_task *task = NULL;
  switch (r->op)
    {
    case OP_READ:
      task = iscsi_read16_sync (t->iscsi, t->lun, lba, r->length, bs, 0, 0, 0,
                                0, 0);
      if (task && task->status == SCSI_STATUS_GOOD
          && task->datain.size == (int)r->length)
        memcpy (buf, task->datain.data, r->length);
      break;
    case OP_WRITE:
      task = iscsi_write16_sync (t->iscsi, t->lun, lba,
                                 (unsigned char *)payload, r->length, bs, 0, 0,
                                 0, 0, 0);
      break;
    case OP_FLUSH:
      task = iscsi_synchronizecache16_sync (t->iscsi, t->lun, 0, 0, 0, 0);
      break;
    case OP_TRIM:
      {
        struct unmap_list l = { lba, blocks };
        task = iscsi_unmap_sync (t->iscsi, t->lun, 0, 0, &l, 1);
        break;
      }
    }
  int rc = task && task->status == SCSI_STATUS_GOOD ? 0 : -1;
  if (task)
    scsi_free_scsi_task (task);
  return rc;
}

/* ---- one target ---- */

static bool
is_iscsi (void)
{
  return strncmp (opt.url, "iscsi://", 8) == 0;
}

static int
target_do (struct target *t, const struct req *r, char *buf)
{
  /* split large requests: both peers and streamsvc cap request sizes */
  if (r->op == OP_FLUSH || r->length <= MAX_CHUNK)
    return t->nbd ? nbd_target_do (t, r, buf) : iscsi_target_do (t, r, buf);
  for (uint64_t done = 0; done < r->length; done += MAX_CHUNK)
    {
      struct req part = *r;
      part.offset = r->offset + done;
      part.length
          = r->length - done < MAX_CHUNK ? r->length - done : MAX_CHUNK;
      if ((t->nbd ? nbd_target_do (t, &part, buf)
                  : iscsi_target_do (t, &part, buf))
          == -1)
        return -1;
    }
  return 0;
}

static void
target_replay (struct target *t, char *buf)
{
  uint64_t t0 = now_us ();
  for (size_t i = 0; i < trace.n; i++)
    {
      const struct req *r = &trace.reqs[i];
      sleep_until_us (t0 + (uint64_t)(r->t_us * opt.think_scale));
      if (past_deadline ())
        {
          t->failures++;
          break;
        }
      uint64_t s = now_us ();
      if (target_do (t, r, buf) == -1)
        {
          if (t->failures++ == 0)
            fprintf (stderr, "boot-storm: target %d: request %zu failed: %s\n",
                     t->number, i + 1,
                     t->nbd ? nbd_get_error () : iscsi_get_error (t->iscsi));
          continue;
        }
      t->lat_us[t->done++] = now_us () - s;
      if (r->op == OP_READ || r->op == OP_WRITE)
        t->bytes += r->length;
    }
  t->boot_us = now_us () - t0;
}

static void *
target_main (void *arg)
{
  struct target *t = arg;
  char url[512];
  snprintf (url, sizeof url, opt.url, t->number);
  t->connected = (is_iscsi () ? iscsi_target_connect (t, url)
                              : nbd_target_connect (t, url))
                 == 0;
  if (!t->connected)
    t->failures++;
  pthread_barrier_wait (&connected_barrier);
  pthread_barrier_wait (&start_barrier);
  char *buf = malloc (MAX_CHUNK);
  if (t->connected && buf)
    target_replay (t, buf);
  free (buf);
  pthread_barrier_wait (&booted_barrier);
  pthread_barrier_wait (&start_barrier); /* released after the hold */
  if (t->nbd)
    {
      if (t->connected)
        nbd_shutdown (t->nbd, 0);
      nbd_close (t->nbd);
    }
  if (t->iscsi)
    {
      if (t->connected)
        iscsi_logout_sync (t->iscsi);
      iscsi_destroy_context (t->iscsi);
    }
  return NULL;
}

/* ---- results ---- */

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t
percentile (uint64_t *v, size_t n, double p)
{
  if (n == 0)
    return 0;
  size_t i = (size_t)(p * (n - 1) + 0.5);
  return v[i];
}

static void
print_results (struct target *ts, double connect_s, double wall_s)
{
  size_t nreq = 0, nboot = 0;
  uint64_t bytes = 0;
  int failures = 0;
  for (int i = 0; i < opt.count; i++)
    {
      nreq += ts[i].done;
      bytes += ts[i].bytes;
      failures += ts[i].failures;
    }
  uint64_t *lat = malloc ((nreq + 1) * sizeof *lat);
  uint64_t *boot = malloc ((opt.count + 1) * sizeof *boot);
  if (!lat || !boot)
    abort ();
  size_t k = 0;
  for (int i = 0; i < opt.count; i++)
    {
      memcpy (lat + k, ts[i].lat_us, ts[i].done * sizeof *lat);
      k += ts[i].done;
      if (ts[i].connected && ts[i].failures == 0)
        boot[nboot++] = ts[i].boot_us;
    }
  qsort (lat, nreq, sizeof *lat, cmp_u64);
  qsort (boot, nboot, sizeof *boot, cmp_u64);
  printf ("targets=%d failures=%d connect_s=%.3f wall_s=%.3f requests=%zu "
          "bytes=%" PRIu64 " req_p50_us=%" PRIu64 " req_p99_us=%" PRIu64
          " boot_p50_ms=%.1f boot_p99_ms=%.1f\n",
          opt.count, failures, connect_s, wall_s, nreq, bytes,
          percentile (lat, nreq, 0.50), percentile (lat, nreq, 0.99),
          percentile (boot, nboot, 0.50) / 1000.0,
          percentile (boot, nboot, 0.99) / 1000.0);
  free (lat);
  free (boot);
}

static void
usage (void)
{
  fprintf (stderr,
           "usage: boot-storm --trace FILE --count N --url TEMPLATE-WITH-%%d\n"
           "                  [--think-scale F] [--deadline SECONDS] "
           "[--hold-ms MS]\n");
  exit (2);
}

static void
parse_args (int argc, char **argv)
{
  for (int i = 1; i < argc; i++)
    {
      const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
      if (!v)
        usage ();
      if (!strcmp (a, "--trace"))
        opt.trace_path = v;
      else if (!strcmp (a, "--url"))
        opt.url = v;
      else if (!strcmp (a, "--count"))
        opt.count = atoi (v);
      else if (!strcmp (a, "--think-scale"))
        opt.think_scale = atof (v);
      else if (!strcmp (a, "--deadline"))
        opt.deadline_s = atof (v);
      else if (!strcmp (a, "--hold-ms"))
        opt.hold_ms = atoi (v);
      else
        usage ();
      i++;
    }
  if (!opt.trace_path || !opt.url || opt.count < 1 || opt.count > 10000
      || opt.think_scale < 0 || opt.deadline_s <= 0 || opt.hold_ms < 0)
    usage ();
  const char *pct = strstr (opt.url, "%d");
  if (!pct || strchr (pct + 2, '%') || strchr (opt.url, '%') != pct)
    {
      fprintf (stderr, "boot-storm: --url must hold exactly one %%d\n");
      exit (2);
    }
}

int
main (int argc, char **argv)
{
  parse_args (argc, argv);
  load_trace (opt.trace_path);
  t_start_us = now_us ();
  payload = malloc (MAX_CHUNK);
  if (!payload)
    abort ();
  for (int i = 0; i < MAX_CHUNK; i++)
    payload[i] = (char)(i * 7 + 1);
  struct target *ts = calloc (opt.count, sizeof *ts);
  if (!ts)
    abort ();
  pthread_barrier_init (&connected_barrier, NULL, opt.count + 1);
  pthread_barrier_init (&start_barrier, NULL, opt.count + 1);
  pthread_barrier_init (&booted_barrier, NULL, opt.count + 1);
  pthread_attr_t attr;
  pthread_attr_init (&attr);
  pthread_attr_setstacksize (&attr, 256 * 1024);
  for (int i = 0; i < opt.count; i++)
    {
      ts[i].number = i + 1;
      ts[i].lat_us = calloc (trace.n, sizeof *ts[i].lat_us);
      if (!ts[i].lat_us
          || pthread_create (&ts[i].thread, &attr, target_main, &ts[i]) != 0)
        {
          fprintf (stderr, "boot-storm: cannot start target %d\n", i + 1);
          exit (1);
        }
    }
  pthread_barrier_wait (&connected_barrier);
  double connect_s = (now_us () - t_start_us) / 1e6;
  int connected = 0;
  for (int i = 0; i < opt.count; i++)
    connected += ts[i].connected;
  printf ("connected %d\n", connected);
  fflush (stdout);
  usleep (opt.hold_ms * 1000);
  uint64_t b0 = now_us ();
  pthread_barrier_wait (&start_barrier);
  pthread_barrier_wait (&booted_barrier);
  double wall_s = (now_us () - b0) / 1e6;
  printf ("booted\n");
  fflush (stdout);
  usleep (opt.hold_ms * 1000);
  pthread_barrier_wait (&start_barrier);
  int failures = 0;
  for (int i = 0; i < opt.count; i++)
    {
      pthread_join (ts[i].thread, NULL);
      failures += ts[i].failures;
    }
  print_results (ts, connect_s, wall_s);
  for (int i = 0; i < opt.count; i++)
    free (ts[i].lat_us);
  free (ts);
  free (payload);
  free (trace.reqs);
  return failures ? 1 : 0;
}
