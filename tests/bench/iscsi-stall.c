/* iscsi-stall: does a flush on one iSCSI session stall another's reads?
 *
 *   iscsi-stall PORTAL READER-IQN FLUSHER-IQN SECONDS
 *
 * One thread reads 4 KiB at random LBAs of READER-IQN's LUN 1, one at a
 * time (QD1), for SECONDS; another, on its own session to FLUSHER-IQN,
 * writes 4 KiB then SYNCHRONIZE CACHE(10), in a loop, for as long.  Prints
 * one line: "reads N p50 US p99 US max US flushes M flush-max US".  Exit
 * 1 on any failed command (a failure is not a latency).  Bounded: each
 * loop ends after SECONDS, and every command has libiscsi's timeout. */
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLOCK 512
#define IO_BLOCKS 8          /* 4 KiB */
#define MAX_SAMPLES 2000000

typedef struct Job Job;
struct Job {
  const char *portal, *iqn;
  double seconds;
  bool (*step) (struct iscsi_context *ctx, Job *j);
  uint64_t *lat_us;          /* one sample per step, or NULL */
  size_t n;                  /* steps done */
  uint64_t max_us;
  uint64_t blocks;           /* reader: the LUN's size, once read */
  unsigned seed;             /* reader: its LBAs */
  bool failed;
};

static uint64_t
now_us (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* A logged-in context on LUN 1 of iqn, or NULL (the reason printed). */
static struct iscsi_context *
connect_lun (const char *portal, const char *iqn)
{
  struct iscsi_context *ctx = iscsi_create_context ("iqn.2026-11.org.diskfarm:stall");
  if (ctx == NULL)
    return NULL;
  iscsi_set_targetname (ctx, iqn);
  iscsi_set_session_type (ctx, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest (ctx, ISCSI_HEADER_DIGEST_NONE);
  iscsi_set_timeout (ctx, 30);
  if (iscsi_full_connect_sync (ctx, portal, 1) != 0)
    {
      fprintf (stderr, "iscsi-stall: %s %s: %s\n", portal, iqn,
               iscsi_get_error (ctx));
      iscsi_destroy_context (ctx);
      return NULL;
    }
  return ctx;
}

/* One command's task: false (the reason printed) unless GOOD. */
static bool
good (struct iscsi_context *ctx, struct scsi_task *t, const char *what)
{
  bool ok = t != NULL && t->status == SCSI_STATUS_GOOD;
  if (!ok)
    fprintf (stderr, "iscsi-stall: %s: %s\n", what, iscsi_get_error (ctx));
  if (t != NULL)
    scsi_free_scsi_task (t);
  return ok;
}

/* One reader step: a 4 KiB READ(10) at a random LBA (the capacity read
 * first). */
static bool
read_step (struct iscsi_context *ctx, Job *j)
{
  if (j->blocks == 0)
    {
      struct scsi_task *cap = iscsi_readcapacity10_sync (ctx, 1, 0, 0);
      if (cap == NULL || cap->status != SCSI_STATUS_GOOD)
        {
          good (ctx, cap, "READ CAPACITY(10)"); /* says why, frees cap */
          return false;
        }
      j->blocks = (uint64_t) scsi_get_uint32 (cap->datain.data) + 1;
      scsi_free_scsi_task (cap);
    }
  uint32_t lba = (uint32_t) ((rand_r (&j->seed) % (j->blocks / IO_BLOCKS))
                             * IO_BLOCKS);
  return good (ctx, iscsi_read10_sync (ctx, 1, lba, IO_BLOCKS * BLOCK, BLOCK,
                                       0, 0, 0, 0, 0), "READ(10)");
}

/* One flusher step: a 4 KiB WRITE(10), then SYNCHRONIZE CACHE(10). */
static bool
flush_step (struct iscsi_context *ctx, Job *j)
{
  unsigned char buf[IO_BLOCKS * BLOCK];

  memset (buf, 0x5a, sizeof buf);
  return good (ctx, iscsi_write10_sync (ctx, 1, (uint32_t) (j->n % 64)
                                        * IO_BLOCKS, buf, sizeof buf, BLOCK,
                                        0, 0, 0, 0, 0), "WRITE(10)")
         && good (ctx, iscsi_synchronizecache10_sync (ctx, 1, 0, 0, 0, 0),
                  "SYNCHRONIZE CACHE(10)");
}

/* A thread: its own session, j->step in a loop for j->seconds, each
 * step's time recorded (j->lat_us when set) and its maximum kept. */
static void *
run_job (void *data)
{
  Job *j = data;
  struct iscsi_context *ctx = connect_lun (j->portal, j->iqn);
  uint64_t end = now_us () + (uint64_t) (j->seconds * 1e6);

  if (ctx == NULL)
    {
      j->failed = true;
      return NULL;
    }
  while (now_us () < end && j->n < MAX_SAMPLES)
    {
      uint64_t t0 = now_us ();
      if (!j->step (ctx, j))
        {
          j->failed = true;
          break;
        }
      uint64_t us = now_us () - t0;
      if (j->lat_us != NULL)
        j->lat_us[j->n] = us;
      j->max_us = us > j->max_us ? us : j->max_us;
      j->n++;
    }
  iscsi_logout_sync (ctx);
  iscsi_destroy_context (ctx);
  return NULL;
}

static int
cmp_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

int
main (int argc, char **argv)
{
  Job r = { 0 }, f = { 0 };
  pthread_t tr, tf;

  if (argc != 5 || atof (argv[4]) <= 0 || atof (argv[4]) > 600)
    {
      fprintf (stderr, "usage: iscsi-stall PORTAL READER-IQN FLUSHER-IQN "
               "SECONDS (0 < SECONDS <= 600)\n");
      return 2;
    }
  r.portal = f.portal = argv[1];
  r.iqn = argv[2];
  f.iqn = argv[3];
  r.seconds = f.seconds = atof (argv[4]);
  r.step = read_step;
  r.seed = 42;
  f.step = flush_step;
  r.lat_us = calloc (MAX_SAMPLES, sizeof *r.lat_us);
  if (r.lat_us == NULL)
    return 1;
  pthread_create (&tr, NULL, run_job, &r);
  pthread_create (&tf, NULL, run_job, &f);
  pthread_join (tr, NULL);
  pthread_join (tf, NULL);
  if (r.failed || f.failed || r.n == 0)
    return 1;
  qsort (r.lat_us, r.n, sizeof *r.lat_us, cmp_u64);
  printf ("reads %zu p50 %llu p99 %llu max %llu flushes %zu flush-max %llu\n",
          r.n, (unsigned long long) r.lat_us[r.n / 2],
          (unsigned long long) r.lat_us[r.n * 99 / 100],
          (unsigned long long) r.lat_us[r.n - 1], f.n,
          (unsigned long long) f.max_us);
  free (r.lat_us);
  return 0;
}
