/* diskfarm: the lease layer (see blk_lease.h). */
#define G_LOG_DOMAIN "diskfarm-lease"

#include "blk_lease.h"
#include "common.h"
#include "vdisk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct DfLease
{
  gint refcount;
  char *label;
  gint64 epoch;
  gint64 valid_until;   /* atomic; monotonic us */
  gint lost;            /* atomic; set once */
  int token_fd;         /* owned, -1: none */
  int journal_fd;       /* owned, -1: none (test hook) */
  DfFence *fence;       /* owned ref */
};

typedef struct
{
  df_blk blk;
  DfLease *lease; /* owned ref */
} LeaseLayer;

static void
journal (DfLease *l, gint64 start, const char *op)
{
  g_autofree char *line = NULL;

  if (l->journal_fd < 0)
    return;
  line = g_strdup_printf ("%" G_GINT64_FORMAT " %s %" G_GINT64_FORMAT " %"
                          G_GINT64_FORMAT " %s\n", l->epoch, l->label, start,
                          df_real_ns (), op);
  if (write (l->journal_fd, line, strlen (line)) < 0)
    g_debug ("write journal: %s", g_strerror (errno));
}

/* ---- token file --------------------------------------------------------- */

/* The epoch the token file holds, 0 when empty, -1 + errno on failure. */
static gint64
token_read (int fd)
{
  char buf[32] = { 0 };
  ssize_t n = pread (fd, buf, sizeof buf - 1, 0);
  char *end;
  gint64 v;

  if (n < 0)
    return -1;
  if (n == 0)
    return 0;
  v = g_ascii_strtoll (buf, &end, 10);
  if (end == buf || v < 0)
    {
      errno = EBADMSG;
      return -1;
    }
  return v;
}

static bool
token_stamp (DfLease *l, const char *dir, GError **err)
{
  g_autofree char *path = g_build_filename (dir, DF_LEASE_TOKEN_FILE, NULL);
  g_autofree char *text = NULL;
  gint64 cur, t0;

  if (g_mkdir_with_parents (dir, 0700) < 0)
    return df_set_error_errno (err, errno, "create cache directory %s",
                               dir), false;
  l->token_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (l->token_fd < 0)
    return df_set_error_errno (err, errno, "open %s", path), false;
  cur = token_read (l->token_fd);
  if (cur < 0)
    return df_set_error_errno (err, errno, "read %s", path), false;
  if (cur > l->epoch)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_DENIED,
                   "%s: the cache's storage holds lease epoch %"
                   G_GINT64_FORMAT ", newer than ours (%" G_GINT64_FORMAT
                   "): a stale lease", path, cur, l->epoch);
      return false;
    }
  text = g_strdup_printf ("%-20" G_GINT64_FORMAT "\n", l->epoch);
  t0 = df_real_ns ();
  if (df_pwrite_all (l->token_fd, text, strlen (text), 0) < 0
      || fdatasync (l->token_fd) < 0)
    return df_set_error_errno (err, errno, "write %s", path), false;
  journal (l, t0, "take");
  return true;
}

/* ---- the lease ---------------------------------------------------------- */

static int
journal_open (void)
{
  const char *path = g_getenv ("DISKFARM_TEST_WRITE_JOURNAL");

  if (path == NULL || *path == '\0')
    return -1;
  return open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
}

DfLease *
df_lease_new (const char *label, gint64 epoch, gint64 valid_until_us,
              const char *token_dir, DfFence *fence, GError **err)
{
  DfLease *l = g_new0 (DfLease, 1);

  g_return_val_if_fail (epoch > 0 && fence != NULL, NULL);
  l->refcount = 1;
  l->label = g_strdelimit (g_strdup (label), " \t\n", '_');
  l->epoch = epoch;
  l->valid_until = valid_until_us;
  l->token_fd = -1;
  l->journal_fd = journal_open ();
  l->fence = df_fence_ref (fence);
  if (token_dir != NULL && !token_stamp (l, token_dir, err))
    {
      df_lease_unref (l);
      return NULL;
    }
  return l;
}

DfLease *
df_lease_ref (DfLease *l)
{
  g_atomic_int_inc (&l->refcount);
  return l;
}

void
df_lease_unref (DfLease *l)
{
  if (l == NULL || !g_atomic_int_dec_and_test (&l->refcount))
    return;
  if (l->token_fd >= 0)
    close (l->token_fd);
  if (l->journal_fd >= 0)
    close (l->journal_fd);
  df_fence_unref (l->fence);
  g_free (l->label);
  g_free (l);
}

gint64
df_lease_epoch (DfLease *l)
{
  return l->epoch;
}

void
df_lease_extend (DfLease *l, gint64 valid_until_us)
{
  if (!df_lease_lost (l))
    __atomic_store_n (&l->valid_until, valid_until_us, __ATOMIC_RELEASE);
}

bool
df_lease_lost (DfLease *l)
{
  return g_atomic_int_get (&l->lost) != 0;
}

bool
df_lease_valid (DfLease *l)
{
  return !df_lease_lost (l)
         && g_get_monotonic_time () < __atomic_load_n (&l->valid_until,
                                                       __ATOMIC_ACQUIRE);
}

void
df_lease_lose (DfLease *l, const char *reason)
{
  g_autofree char *why = NULL;

  if (!g_atomic_int_compare_and_exchange (&l->lost, 0, 1))
    return;
  why = g_strdup_printf ("cache lease epoch %" G_GINT64_FORMAT " lost: %s",
                         l->epoch, reason);
  g_warning ("%s: %s; its writes and flushes now fail", l->label, why);
  df_fence_trip_moved (l->fence, why);
}

/* ---- the layer ---------------------------------------------------------- */

/* The lease is valid now; else it is lost and *err = EIO. */
static bool
guard (DfLease *l, const char *when, int *err)
{
  if (G_LIKELY (df_lease_valid (l)))
    return true;
  df_lease_lose (l, when);
  *err = EIO;
  return false;
}

/* The token file still holds our epoch (after a flush). */
static bool
token_ours (DfLease *l, int *err)
{
  gint64 cur;
  g_autofree char *why = NULL;

  if (l->token_fd < 0)
    return true;
  cur = token_read (l->token_fd);
  if (cur == l->epoch)
    return true;
  why = cur < 0 ? g_strdup_printf ("reading the token file: %s",
                                   g_strerror (errno))
                : g_strdup_printf ("the storage holds epoch %" G_GINT64_FORMAT
                                   " (a survivor took the cache over)", cur);
  df_lease_lose (l, why);
  *err = EIO;
  return false;
}

/* Run one write-path call: refused before it starts unless the lease is
 * valid; a durable one is acknowledged only while it still is. */
#define LEASED_CALL(l, durable, op, call)                                    \
  do                                                                         \
    {                                                                        \
      int r_;                                                                \
      if (!guard ((l), "not renewed in time", err))                          \
        return -1;                                                           \
      r_ = (call);                                                           \
      if (r_ == 0 && (durable)                                               \
          && !guard ((l), "expired while a " op " was in flight", err))      \
        return -1;                                                           \
      return r_;                                                             \
    }                                                                        \
  while (0)

/* DfCacheWriter of the cache under the layer: the store asks right
 * before each write to its files (the last word: a slow request that
 * started under a valid lease cannot write after it). */
static bool
writer_may_write (void *data)
{
  DfLease *l = data;

  if (G_LIKELY (df_lease_valid (l)))
    return true;
  df_lease_lose (l, "not renewed in time (a write to the storage refused)");
  return false;
}

static void
writer_wrote (void *data, const char *op, gint64 start_ns)
{
  journal (data, start_ns, op);
}

static const DfCacheWriter lease_writer = {
  .may_write = writer_may_write,
  .wrote = writer_wrote,
};

static int
lease_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  LeaseLayer *ll = (LeaseLayer *) b;

  LEASED_CALL (ll->lease, flags & DF_BLK_FUA, "write",
               df_blk_pwrite (b->next, buf, count, offset, flags, err));
}

static int
lease_zero (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  LeaseLayer *ll = (LeaseLayer *) b;

  LEASED_CALL (ll->lease, flags & DF_BLK_FUA, "zero",
               df_blk_zero (b->next, count, offset, flags, err));
}

static int
lease_trim (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  LeaseLayer *ll = (LeaseLayer *) b;

  LEASED_CALL (ll->lease, flags & DF_BLK_FUA, "trim",
               df_blk_trim (b->next, count, offset, flags, err));
}

static int
flush_checked (df_blk *b, DfLease *l, int *err)
{
  if (df_blk_flush (b->next, err) < 0)
    return -1;
  return token_ours (l, err) ? 0 : -1;
}

static int
lease_flush (df_blk *b, int *err)
{
  LeaseLayer *ll = (LeaseLayer *) b;

  LEASED_CALL (ll->lease, true, "flush", flush_checked (b, ll->lease, err));
}

static void
lease_destroy (df_blk *b)
{
  LeaseLayer *ll = (LeaseLayer *) b;

  /* Its close would flush: only while the lease is still ours (and the
   * store asks again before each write). */
  if (!df_lease_valid (ll->lease))
    df_cache_abandon (b->next);
  df_blk_unref (b->next);
  df_lease_unref (ll->lease);
  g_free (ll);
}

static const df_blk_ops lease_ops = {
  .name = "lease",
  .pwrite = lease_pwrite,
  .flush = lease_flush,
  .trim = lease_trim,
  .zero = lease_zero,
  .destroy = lease_destroy,
};

df_blk *
df_lease_blk_new (DfLease *l, df_blk *inner)
{
  LeaseLayer *ll = g_new0 (LeaseLayer, 1);

  df_blk_filter_init (&ll->blk, &lease_ops, inner);
  ll->lease = df_lease_ref (l);
  df_cache_set_writer (inner, &lease_writer, df_lease_ref (l),
                       (GDestroyNotify) df_lease_unref);
  return &ll->blk;
}

/* ---- a lost cache ------------------------------------------------------- */

static int
lost_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  *err = EIO;
  return -1;
}

static int
lost_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
             uint32_t flags, int *err)
{
  *err = EIO;
  return -1;
}

static int
lost_flush (df_blk *b, int *err)
{
  *err = EIO;
  return -1;
}

static int
lost_range (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  *err = EIO;
  return -1;
}

static int
lost_extents (df_blk *b, uint32_t count, uint64_t offset, df_extent_cb cb,
              void *opaque, int *err)
{
  *err = EIO;
  return -1;
}

static void
lost_destroy (df_blk *b)
{
  g_free (b);
}

static const df_blk_ops lost_ops = {
  .name = "lost-cache",
  .pread = lost_pread,
  .pwrite = lost_pwrite,
  .flush = lost_flush,
  .trim = lost_range,
  .zero = lost_range,
  .extents = lost_extents,
  .destroy = lost_destroy,
};

df_blk *
df_lost_blk_new (uint64_t size)
{
  df_blk *b = g_new0 (df_blk, 1);

  df_blk_init (b, &lost_ops, size, false);
  b->can_trim = b->can_zero = b->can_flush = true;
  return b;
}
