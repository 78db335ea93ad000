/* Unit tests: the policy layers shared by NBD and iSCSI: accounting
 * (streamsvc/layer_account.c) and read-only (lib/vdisk/blk_readonly.c),
 * over an in-memory df_blk that can be told to fail. */
#include <errno.h>
#include <string.h>

#include "blk_fence.h"
#include "blk_readonly.h"
#include "layer_account.h"
#include "sessions.h"
#include "test-metrics.h"
#include "test-util.h"

#define MEM_SIZE (64u * 1024)

typedef struct {
  df_blk blk;
  uint8_t data[MEM_SIZE];
  int fail;   /* errno every op returns; 0: succeed */
  guint calls;
} MemBlk;

static int
mem_result (MemBlk *m, int *err)
{
  m->calls++;
  if (m->fail == 0)
    return 0;
  *err = m->fail;
  return -1;
}

static int
mem_pread (df_blk *b, void *buf, uint32_t n, uint64_t off, int *err)
{
  MemBlk *m = (MemBlk *) b;

  memcpy (buf, m->data + off, n);
  return mem_result (m, err);
}

static int
mem_pwrite (df_blk *b, const void *buf, uint32_t n, uint64_t off,
            uint32_t flags, int *err)
{
  MemBlk *m = (MemBlk *) b;

  (void) flags;
  if (m->fail == 0)
    memcpy (m->data + off, buf, n);
  return mem_result (m, err);
}

static int
mem_flush (df_blk *b, int *err)
{
  return mem_result ((MemBlk *) b, err);
}

static int
mem_clear (df_blk *b, uint32_t n, uint64_t off, uint32_t flags, int *err)
{
  MemBlk *m = (MemBlk *) b;

  (void) flags;
  if (m->fail == 0)
    memset (m->data + off, 0, n);
  return mem_result (m, err);
}

static int
mem_extents (df_blk *b, uint32_t n, uint64_t off, df_extent_cb cb,
             void *opaque, int *err)
{
  cb (opaque, off, n, 0);
  return mem_result ((MemBlk *) b, err);
}

static void
mem_destroy (df_blk *b)
{
  g_free (b);
}

static const df_blk_ops mem_ops = {
  .name = "mem", .pread = mem_pread, .pwrite = mem_pwrite,
  .flush = mem_flush, .trim = mem_clear, .zero = mem_clear,
  .extents = mem_extents, .destroy = mem_destroy,
};

static MemBlk *
mem_new (void)
{
  MemBlk *m = g_new0 (MemBlk, 1);

  df_blk_init (&m->blk, &mem_ops, MEM_SIZE, false);
  m->blk.can_fast_zero = true;
  return m;
}

static int
count_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  (void) offset;
  (void) flags;
  *(uint64_t *) opaque += length;
  return 0;
}

#define OPS(op) "diskfarm_ops_total{export=\"device/pc01\",op=\"" op "\"}"
#define ERRORS "diskfarm_errors_total{export=\"device/pc01\"}"
#define BYTES(dir)                                                           \
  "diskfarm_bytes_total{export=\"device/pc01\",direction=\"" dir "\"}"
#define QUOTA "diskfarm_quota_refusals_total{device=\"pc01\"}"

/* Every op through the layer is counted once, with its bytes; the layer
 * mirrors the inner layer's size, read-only flag and capabilities. */
static void
test_account_ops (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *ss = df_session_start (s, "nbd", "unix");
  MemBlk *m = mem_new ();
  df_blk *b;
  uint8_t buf[4096];
  uint64_t seen = 0;
  int err = 0;
  g_autofree char *text = NULL;

  df_session_set_export (ss, "device/pc01", "pc01");
  b = df_account_blk_new (&m->blk, ss);
  df_blk_unref (&m->blk); /* b holds it */
  g_assert_cmpuint (b->size, ==, MEM_SIZE);
  g_assert_false (b->readonly);
  g_assert_true (b->can_trim && b->can_zero && b->can_fast_zero
                 && b->can_flush);
  memset (buf, 'a', sizeof buf);
  g_assert_cmpint (df_blk_pwrite (b, buf, 512, 0, 0, &err), ==, 0);
  g_assert_cmpint (df_blk_pread (b, buf, 4096, 0, &err), ==, 0);
  g_assert_cmpint (buf[511], ==, 'a');
  g_assert_cmpint (df_blk_flush (b, &err), ==, 0);
  g_assert_cmpint (df_blk_trim (b, 4096, 8192, 0, &err), ==, 0);
  g_assert_cmpint (df_blk_zero (b, 4096, 8192, 0, &err), ==, 0);
  g_assert_cmpint (df_blk_extents (b, 8192, 0, count_extent, &seen, &err),
                   ==, 0);
  g_assert_cmpuint (seen, ==, 8192);
  g_assert_cmpuint (m->calls, ==, 6);
  text = tu_metrics_text (s);
  g_assert_cmpint (tu_metric_value (text, OPS ("read")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, OPS ("write")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, OPS ("flush")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, OPS ("trim")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, OPS ("zero")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, OPS ("block_status")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, ERRORS), ==, 0);
  g_assert_cmpint (tu_metric_value (text, BYTES ("read")), ==, 4096);
  g_assert_cmpint (tu_metric_value (text, BYTES ("write")), ==, 512);
  g_assert_cmpint (tu_metric_value (text, QUOTA), ==, 0);
  g_assert_cmpint (tu_metric_value (text,
                                    "diskfarm_request_duration_seconds_count"
                                    "{export=\"device/pc01\"}"),
                   ==, 6);
  df_blk_unref (b);
  df_session_end (ss);
  df_sessions_free (s);
}

/* Failures count as errors without bytes; ENOSPC and EDQUOT are quota
 * refusals of the session's device, other errors are not. */
static void
test_account_failures (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *ss = df_session_start (s, "iscsi", "127.0.0.1:1");
  MemBlk *m = mem_new ();
  df_blk *b;
  uint8_t buf[512] = { 0 };
  int err = 0;
  g_autofree char *text = NULL;

  df_session_set_export (ss, "device/pc01", "pc01");
  b = df_account_blk_new (&m->blk, ss);
  df_blk_unref (&m->blk); /* b holds it */
  m->fail = ENOSPC;
  g_assert_cmpint (df_blk_pwrite (b, buf, 512, 0, 0, &err), ==, -1);
  g_assert_cmpint (err, ==, ENOSPC);
  m->fail = EDQUOT;
  g_assert_cmpint (df_blk_zero (b, 512, 0, 0, &err), ==, -1);
  g_assert_cmpint (err, ==, EDQUOT);
  m->fail = EIO;
  g_assert_cmpint (df_blk_pread (b, buf, 512, 0, &err), ==, -1);
  g_assert_cmpint (err, ==, EIO);
  text = tu_metrics_text (s);
  g_assert_cmpint (tu_metric_value (text, ERRORS), ==, 3);
  g_assert_cmpint (tu_metric_value (text, QUOTA), ==, 2);
  g_assert_cmpint (tu_metric_value (text, OPS ("write")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, OPS ("zero")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, OPS ("read")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, BYTES ("read")), ==, 0);
  g_assert_cmpint (tu_metric_value (text, BYTES ("write")), ==, 0);
  df_blk_unref (b);
  df_session_end (ss);
  df_sessions_free (s);
}

/* The read-only layer reads and flushes through and refuses every change
 * with EROFS, leaving the data alone. */
static void
test_readonly (void)
{
  MemBlk *m = mem_new ();
  df_blk *b = df_readonly_blk_new (&m->blk);
  uint8_t buf[512];
  uint64_t seen = 0;
  int err = 0;

  df_blk_unref (&m->blk); /* b holds it */
  m->data[0] = 'v';
  g_assert_true (b->readonly);
  g_assert_false (b->can_trim || b->can_zero || b->can_fast_zero);
  g_assert_true (b->can_flush);
  g_assert_cmpuint (b->size, ==, MEM_SIZE);
  g_assert_true (df_readonly_blk_inner (b) == &m->blk);
  g_assert_cmpint (df_blk_pread (b, buf, sizeof buf, 0, &err), ==, 0);
  g_assert_cmpint (buf[0], ==, 'v');
  memset (buf, 'x', sizeof buf);
  g_assert_cmpint (df_blk_pwrite (b, buf, sizeof buf, 0, DF_BLK_FUA, &err),
                   ==, -1);
  g_assert_cmpint (err, ==, EROFS);
  err = 0;
  g_assert_cmpint (df_blk_trim (b, 512, 0, 0, &err), ==, -1);
  g_assert_cmpint (err, ==, EROFS);
  err = 0;
  g_assert_cmpint (df_blk_zero (b, 512, 0, DF_BLK_MAY_TRIM, &err), ==, -1);
  g_assert_cmpint (err, ==, EROFS);
  g_assert_cmpint (m->data[0], ==, 'v');
  g_assert_cmpuint (m->calls, ==, 1); /* only the read got through */
  g_assert_cmpint (df_blk_flush (b, &err), ==, 0);
  g_assert_cmpint (df_blk_extents (b, 4096, 0, count_extent, &seen, &err),
                   ==, 0);
  g_assert_cmpuint (seen, ==, 4096);
  df_blk_unref (b);
}

/* A session's stack: accounting over a fence over the read-only layer.
 * A write that got past an edge is refused with EROFS, counted as one
 * failed write, not as a quota refusal. */
static void
test_readonly_stack (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *ss = df_session_start (s, "nbd", "unix");
  MemBlk *m = mem_new ();
  df_blk *ro = df_readonly_blk_new (&m->blk);
  g_autoptr (DfFence) f = df_fence_new ("test", NULL, NULL, NULL);
  df_blk *fenced = df_fence_blk_new (f, ro);
  df_blk *b;
  uint8_t buf[512] = { 0 };
  int err = 0;
  g_autofree char *text = NULL;

  df_blk_unref (&m->blk);
  df_blk_unref (ro);
  df_session_set_export (ss, "device/pc01", "pc01");
  b = df_account_blk_new (fenced, ss);
  df_blk_unref (fenced);
  g_assert_true (b->readonly);
  g_assert_false (b->can_trim || b->can_zero);
  g_assert_cmpint (df_blk_pwrite (b, buf, 512, 0, 0, &err), ==, -1);
  g_assert_cmpint (err, ==, EROFS);
  g_assert_cmpint (df_blk_pread (b, buf, 512, 0, &err), ==, 0);
  text = tu_metrics_text (s);
  g_assert_cmpint (tu_metric_value (text, OPS ("write")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, OPS ("read")), ==, 1);
  g_assert_cmpint (tu_metric_value (text, ERRORS), ==, 1);
  g_assert_cmpint (tu_metric_value (text, QUOTA), ==, 0);
  df_blk_unref (b);
  df_session_end (ss);
  df_sessions_free (s);
}

static const TuTest tests[] = {
  { "/layers/account/ops", test_account_ops },
  { "/layers/account/failures", test_account_failures },
  { "/layers/readonly/refuses", test_readonly },
  { "/layers/readonly/stack", test_readonly_stack },
};

TU_MAIN (tests)
