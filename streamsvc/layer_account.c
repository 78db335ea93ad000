/* streamsvc: the accounting layer (see layer_account.h). */
#include "layer_account.h"

#include <errno.h>
#include <time.h>

typedef struct {
  df_blk blk;      /* a filter: blk.next is the accounted layer */
  DfSession *sess; /* borrowed */
} AccountLayer;

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* Account one call that started at t0 and returned r (err set when r < 0);
 * returns r. */
static int
account (AccountLayer *l, DfOp op, uint64_t bytes, uint64_t t0, int r,
         const int *err)
{
  if (r < 0 && (*err == ENOSPC || *err == EDQUOT))
    df_session_quota_hit (l->sess);
  df_session_account (l->sess, op, r < 0 ? 0 : bytes, now_ns () - t0, r < 0);
  return r;
}

static int
account_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset,
               int *err)
{
  AccountLayer *l = (AccountLayer *) b;
  uint64_t t0 = now_ns ();

  return account (l, DF_OP_READ, count, t0,
                  df_blk_pread (l->blk.next, buf, count, offset, err), err);
}

static int
account_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
                uint32_t flags, int *err)
{
  AccountLayer *l = (AccountLayer *) b;
  uint64_t t0 = now_ns ();

  return account (l, DF_OP_WRITE, count, t0,
                  df_blk_pwrite (l->blk.next, buf, count, offset, flags, err),
                  err);
}

static int
account_flush (df_blk *b, int *err)
{
  AccountLayer *l = (AccountLayer *) b;
  uint64_t t0 = now_ns ();

  return account (l, DF_OP_FLUSH, 0, t0, df_blk_flush (l->blk.next, err), err);
}

static int
account_trim (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
              int *err)
{
  AccountLayer *l = (AccountLayer *) b;
  uint64_t t0 = now_ns ();

  return account (l, DF_OP_TRIM, count, t0,
                  df_blk_trim (l->blk.next, count, offset, flags, err), err);
}

static int
account_zero (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
              int *err)
{
  AccountLayer *l = (AccountLayer *) b;
  uint64_t t0 = now_ns ();

  return account (l, DF_OP_ZERO, count, t0,
                  df_blk_zero (l->blk.next, count, offset, flags, err), err);
}

static int
account_extents (df_blk *b, uint32_t count, uint64_t offset, df_extent_cb cb,
                 void *opaque, int *err)
{
  AccountLayer *l = (AccountLayer *) b;
  uint64_t t0 = now_ns ();

  return account (l, DF_OP_BLOCK_STATUS, count, t0,
                  df_blk_extents (l->blk.next, count, offset, cb, opaque, err),
                  err);
}

/* A span sent from a file is a read of its length; a copy span is
 * accounted by the pread that copies it. */
static int
account_span (df_blk *b, uint32_t count, uint64_t offset, df_blk_span *span,
              int *err)
{
  AccountLayer *l = (AccountLayer *) b;
  uint64_t t0 = now_ns ();
  int r = df_blk_span_of (l->blk.next, count, offset, span, err);

  if (r < 0 || span->fd >= 0)
    account (l, DF_OP_READ, r < 0 ? 0 : span->length, t0, r, err);
  return r;
}

static const df_blk_ops account_ops = {
  .name = "account",
  .pread = account_pread,
  .pwrite = account_pwrite,
  .flush = account_flush,
  .trim = account_trim,
  .zero = account_zero,
  .extents = account_extents,
  .span = account_span,
  /* destroy: the default of a filter (unref next, free) */
};

df_blk *
df_account_blk_new (df_blk *inner, DfSession *ss)
{
  AccountLayer *l = g_new0 (AccountLayer, 1);

  g_assert (inner != NULL && ss != NULL);
  df_blk_filter_init (&l->blk, &account_ops, inner);
  l->sess = ss;
  return &l->blk;
}
