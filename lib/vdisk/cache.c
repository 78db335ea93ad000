/* diskfarm: write caches - df_cache_open, the shared block map and the
 * request logic (RMW, quota, trim/zero, extents).  The modes and their
 * stores are rows of cache_modes.c.  See cache_int.h for the model and the
 * locking rules. */
#include "cache_int.h"

#include "privilege.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define BS    DF_CACHE_BLOCK_SIZE
#define SHIFT DF_CACHE_BLOCK_SHIFT
#define MASK  DF_CACHE_BLOCK_MASK

#define QUOTA_WARN_INTERVAL_US (60 * G_USEC_PER_SEC)

/* ---- range locks ------------------------------------------------------- */

struct df_cache_range {
  uint64_t b0, b1;            /* inclusive block range */
  bool exclusive;
  df_cache_range *next;
};

static bool
ranges_conflict (const df_cache_range *a, const df_cache_range *b)
{
  return a->b0 <= b->b1 && b->b0 <= a->b1 && (a->exclusive || b->exclusive);
}

static bool
range_is_free (df_cache *c, const df_cache_range *r)
{
  for (const df_cache_range *o = c->ranges; o != NULL; o = o->next)
    if (ranges_conflict (o, r))
      return false;
  return true;
}

/* r lives on the caller's stack until range_unlock. */
static void
range_lock (df_cache *c, df_cache_range *r, uint64_t b0, uint64_t b1,
            bool exclusive)
{
  r->b0 = b0;
  r->b1 = b1;
  r->exclusive = exclusive;
  g_mutex_lock (&c->lock);
  while (!range_is_free (c, r))
    g_cond_wait (&c->range_cond, &c->lock);
  r->next = c->ranges;
  c->ranges = r;
  g_mutex_unlock (&c->lock);
}

static void
range_unlock (df_cache *c, df_cache_range *r)
{
  g_mutex_lock (&c->lock);
  for (df_cache_range **p = &c->ranges; *p != NULL; p = &(*p)->next)
    if (*p == r)
      {
        *p = r->next;
        break;
      }
  g_cond_broadcast (&c->range_cond);
  g_mutex_unlock (&c->lock);
}

/* ---- file helpers for stores ------------------------------------------- */

int
df_cache_tmpfile (const char *dir, uint64_t size, GError **err)
{
  int fd = open (dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

  if (fd < 0)
    {
      /* No O_TMPFILE on this file system: named file, unlinked at once. */
      g_autofree char *tmpl = g_build_filename (dir,
                                                DF_CACHE_TMP_PREFIX "XXXXXX",
                                                NULL);
      fd = g_mkstemp_full (tmpl, O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0)
        {
          df_set_error_errno (err, errno, "create temporary cache file in %s",
                              dir);
          return -1;
        }
      unlink (tmpl);
    }
  if (ftruncate (fd, (off_t) size) < 0)
    {
      df_set_error_errno (err, errno, "size temporary cache file in %s", dir);
      close (fd);
      return -1;
    }
  return fd;
}

/* A failed df_pread_all or df_pwrite_all (errno) of the cache file:
 * logged once here, *err = errno, -1. */
static int
file_io_failed (df_cache *c, const char *op, uint64_t off, int *err)
{
  *err = errno;
  g_warning ("cache %s: %s at %" G_GUINT64_FORMAT ": %s", c->dir, op, off,
             g_strerror (errno));
  return -1;
}

int
df_cache_file_read (df_cache *c, int fd, void *buf, size_t len, uint64_t off,
                    int *err)
{
  if (df_pread_all (fd, buf, len, off) == 0)
    return 0;
  return file_io_failed (c, "read", off, err);
}

int
df_cache_file_write (df_cache *c, int fd, const void *buf, size_t len,
                     uint64_t off, int *err)
{
  if (df_pwrite_all (fd, buf, len, off) == 0)
    return 0;
  return file_io_failed (c, "write", off, err);
}

void
df_cache_file_punch (df_cache *c, int fd, uint64_t off, uint64_t len)
{
  if (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) off,
                 (off_t) len) < 0)
    g_debug ("cache %s: punch hole: %s", c->dir, g_strerror (errno));
}

/* ---- the block map ------------------------------------------------------ */

/* c->state lives in its own anonymous mapping, whatever malloc would do
 * with its size: a page of it exists only once a block it covers left
 * BASE (one 4 KiB page per 16 MiB of disk), so the map of a session that
 * wrote little costs little, on any disk size.  All BASE (zero) at first.
 * NULL on failure. */
static uint8_t *
state_alloc (uint64_t nblocks)
{
  void *p = mmap (NULL, MAX (nblocks, 1), PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

  return p == MAP_FAILED ? NULL : p;
}

static void
state_free (uint8_t *state, uint64_t nblocks)
{
  if (state != NULL)
    munmap (state, MAX (nblocks, 1));
}

/* ---- block helpers ------------------------------------------------------ */

static bool
block_is_zero (const uint8_t *p)
{
  return p[0] == 0 && memcmp (p, p + 1, BS - 1) == 0;
}

/* Length of the run of blocks from blk (< limit) in the same state. */
static uint64_t
state_run (df_cache *c, uint64_t blk, uint64_t limit)
{
  uint8_t st = c->state[blk];
  uint64_t n = 1;

  while (blk + n < limit && c->state[blk + n] == st)
    n++;
  return n;
}

/* Current contents of block blk into buf (4 KiB); the caller holds a range
 * lock on blk.  Bytes past the end of the disk read as zeros. */
static int
read_block (df_cache *c, uint64_t blk, uint8_t *buf, int *err)
{
  uint64_t off = blk << SHIFT;
  uint32_t len = (uint32_t) MIN ((uint64_t) BS, c->blk.size - off);

  switch (c->state[blk])
    {
    case DF_CB_ZERO:
      memset (buf, 0, BS);
      return 0;
    case DF_CB_CACHED:
      return c->store->read (c, buf, BS, off, err);
    default:
      memset (buf + len, 0, BS - len);
      return df_blk_pread (c->base, buf, len, off, err);
    }
}

/* Reserve quota for cost new blocks, or fail with ENOSPC (logged at most
 * once a minute per device). */
static int
quota_reserve (df_cache *c, uint64_t cost, int *err)
{
  int ret = 0;

  g_mutex_lock (&c->lock);
  if (c->quota != 0 && cost != 0
      && (c->cached_blocks + c->reserved_blocks + cost) > c->quota >> SHIFT)
    {
      gint64 now = g_get_monotonic_time ();
      c->quota_hits++;
      if (c->last_quota_warning == 0
          || now - c->last_quota_warning >= QUOTA_WARN_INTERVAL_US)
        {
          c->last_quota_warning = now;
          g_warning ("cache %s: quota of %" G_GUINT64_FORMAT " bytes reached "
                     "(%" G_GUINT64_FORMAT " cached); refusing writes with "
                     "ENOSPC", c->dir, c->quota, c->cached_blocks << SHIFT);
        }
      *err = ENOSPC;
      ret = -1;
    }
  else
    c->reserved_blocks += cost;
  g_mutex_unlock (&c->lock);
  return ret;
}

static void
quota_release (df_cache *c, uint64_t cost)
{
  g_mutex_lock (&c->lock);
  c->reserved_blocks -= cost;
  g_mutex_unlock (&c->lock);
}

/* Set block states (c->lock held); target NULL means all ZERO. */
static void
set_states (df_cache *c, uint64_t b0, uint64_t n, const uint8_t *target)
{
  for (uint64_t i = 0; i < n; i++)
    {
      uint8_t old = c->state[b0 + i];
      uint8_t new = target ? target[i] : DF_CB_ZERO;
      if (old == new)
        continue;
      if (old == DF_CB_CACHED)
        c->cached_blocks--;
      if (new == DF_CB_CACHED)
        c->cached_blocks++;
      c->state[b0 + i] = new;
      if (c->store->changed != NULL)
        c->store->changed (c, b0 + i);
    }
}

/* Apply whole-block new contents to blocks [b0, b0+n) (exclusive range lock
 * held, quota already reserved).  target[i] is CACHED (data from
 * data + i * 4 KiB) or ZERO; target NULL means all ZERO (data unused).
 * Data is stored first, the map flipped after, freed space released last. */
static int
apply_blocks (df_cache *c, uint64_t b0, uint64_t n, const uint8_t *target,
              const uint8_t *data, int *err)
{
  g_autofree uint8_t *was_cached = g_malloc (n);

  for (uint64_t i = 0; i < n; i++)
    was_cached[i] = c->state[b0 + i] == DF_CB_CACHED;
  for (uint64_t i = 0; target != NULL && i < n;)
    {
      uint64_t len = 1;
      while (i + len < n && target[i + len] == target[i])
        len++;
      if (target[i] == DF_CB_CACHED
          && c->store->write (c, data + (i << SHIFT), b0 + i, len, err) == -1)
        return -1;
      i += len;
    }

  g_mutex_lock (&c->lock);
  set_states (c, b0, n, target);
  g_mutex_unlock (&c->lock);

  for (uint64_t i = 0; i < n;)
    {
      uint64_t len = 0;
      while (i + len < n && was_cached[i + len]
             && (target == NULL || target[i + len] == DF_CB_ZERO))
        len++;
      if (len > 0)
        c->store->discard (c, b0 + i, len);
      i += len > 0 ? len : 1;
    }
  return 0;
}

/* Blocks that stop being non-CACHED: what a write costs against quota. */
static uint64_t
write_cost (df_cache *c, uint64_t b0, uint64_t n, const uint8_t *target)
{
  uint64_t cost = 0;

  for (uint64_t i = 0; i < n; i++)
    if (target[i] == DF_CB_CACHED && c->state[b0 + i] != DF_CB_CACHED)
      cost++;
  return cost;
}

/* ---- df_blk ops --------------------------------------------------------- */

static int
read_locked (df_cache *c, uint8_t *buf, uint64_t offset, uint64_t end,
             int *err)
{
  for (uint64_t pos = offset; pos < end;)
    {
      uint64_t blk = pos >> SHIFT;
      uint64_t n = state_run (c, blk, ((end - 1) >> SHIFT) + 1);
      uint64_t run_end = MIN ((blk + n) << SHIFT, end);
      uint8_t *dst = buf + (pos - offset);
      size_t len = run_end - pos;
      int r = 0;

      if (c->state[blk] == DF_CB_ZERO)
        memset (dst, 0, len);
      else if (c->state[blk] == DF_CB_CACHED)
        r = c->store->read (c, dst, len, pos, err);
      else
        r = df_blk_pread (c->base, dst, (uint32_t) len, pos, err);
      if (r == -1)
        return -1;
      pos = run_end;
    }
  return 0;
}

static int
cache_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  df_cache *c = (df_cache *) b;
  df_cache_range r;
  int ret;

  range_lock (c, &r, offset >> SHIFT, (offset + count - 1) >> SHIFT, false);
  ret = read_locked (c, buf, offset, offset + count, err);
  range_unlock (c, &r);
  return ret;
}

/* Blocks the cache never took read from the base: where the base keeps
 * them (a span of its immutable files, or a copy); cached and zero blocks
 * are copied (their store is written in place).  Checked under the range
 * lock as a read: a later write lands in the store, not in the base file
 * the span points into, so the span keeps what this read saw. */
static int
cache_span (df_blk *b, uint32_t count, uint64_t offset, df_blk_span *span,
            int *err)
{
  df_cache *c = (df_cache *) b;
  uint64_t end = offset + count, blk = offset >> SHIFT;
  df_cache_range r;
  uint32_t len;
  int ret = 0;

  range_lock (c, &r, blk, (end - 1) >> SHIFT, false);
  len = (uint32_t) (MIN ((blk + state_run (c, blk, ((end - 1) >> SHIFT) + 1))
                         << SHIFT, end) - offset);
  if (c->state[blk] == DF_CB_BASE)
    ret = df_blk_span_of (c->base, len, offset, span, err);
  else
    *span = (df_blk_span) { NULL, -1, 0, len };
  range_unlock (c, &r);
  return ret;
}

/* Whole-block image of an unaligned write: head and tail blocks are read
 * first (RMW).  Returns a new buffer of n blocks or NULL + *err. */
static uint8_t *
rmw_buffer (df_cache *c, const void *buf, uint32_t count, uint64_t offset,
            uint64_t n, int *err)
{
  uint64_t b0 = offset >> SHIFT, b1 = b0 + n - 1;
  uint64_t end = offset + count;
  g_autofree uint8_t *bounce = g_try_malloc (n << SHIFT);

  if (bounce == NULL)
    {
      *err = ENOMEM;
      return NULL;
    }
  if ((offset & MASK) != 0 && read_block (c, b0, bounce, err) == -1)
    return NULL;
  if ((end & MASK) != 0 && (b1 != b0 || (offset & MASK) == 0)
      && read_block (c, b1, bounce + ((n - 1) << SHIFT), err) == -1)
    return NULL;
  memcpy (bounce + (offset & MASK), buf, count);
  return g_steal_pointer (&bounce);
}

static int
write_locked (df_cache *c, const void *buf, uint32_t count, uint64_t offset,
              int *err)
{
  uint64_t b0 = offset >> SHIFT;
  uint64_t n = ((offset + count - 1) >> SHIFT) - b0 + 1;
  g_autofree uint8_t *bounce = NULL;
  g_autofree uint8_t *target = g_malloc (n);
  const uint8_t *data = buf;
  uint64_t cost;
  int ret;

  if (((offset | count) & MASK) != 0)
    {
      bounce = rmw_buffer (c, buf, count, offset, n, err);
      if (bounce == NULL)
        return -1;
      data = bounce;
    }
  for (uint64_t i = 0; i < n; i++)
    target[i] = block_is_zero (data + (i << SHIFT)) ? DF_CB_ZERO
                                                    : DF_CB_CACHED;
  cost = write_cost (c, b0, n, target);
  if (quota_reserve (c, cost, err) == -1)
    return -1;
  ret = apply_blocks (c, b0, n, target, data, err);
  quota_release (c, cost);
  return ret;
}

static int
cache_flush (df_blk *b, int *err)
{
  df_cache *c = (df_cache *) b;

  return c->store->flush ? c->store->flush (c, err) : 0;
}

static int
cache_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  df_cache *c = (df_cache *) b;
  df_cache_range r;
  int ret;

  range_lock (c, &r, offset >> SHIFT, (offset + count - 1) >> SHIFT, true);
  ret = write_locked (c, buf, count, offset, err);
  range_unlock (c, &r);
  if (ret == 0 && (flags & DF_BLK_FUA) != 0)
    ret = cache_flush (b, err);
  return ret;
}

/* Whole blocks covered by [offset, offset+count): [*fb0, *fb1).  The last
 * block counts as whole when the range reaches the end of the disk. */
static bool
full_blocks (df_cache *c, uint32_t count, uint64_t offset, uint64_t *fb0,
             uint64_t *fb1)
{
  uint64_t end = offset + count;

  *fb0 = (offset + MASK) >> SHIFT;
  *fb1 = end == c->blk.size ? c->nblocks : end >> SHIFT;
  return *fb0 < *fb1;
}

/* TRIM: whole blocks become ZERO and free their space; partial blocks are
 * left alone (trim is advisory). */
static int
cache_trim (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  df_cache *c = (df_cache *) b;
  df_cache_range r;
  uint64_t fb0, fb1;
  int ret;

  if (!full_blocks (c, count, offset, &fb0, &fb1))
    return 0;
  range_lock (c, &r, fb0, fb1 - 1, true);
  ret = apply_blocks (c, fb0, fb1 - fb0, NULL, NULL, err);
  range_unlock (c, &r);
  if (ret == 0 && (flags & DF_BLK_FUA) != 0)
    ret = cache_flush (b, err);
  return ret;
}

/* Zero part of one block: RMW into buf, *target = its new state. */
static int
zero_partial (df_cache *c, uint64_t blk, uint64_t offset, uint64_t end,
              uint8_t *buf, uint8_t *target, int *err)
{
  uint64_t start = MAX (offset, blk << SHIFT);
  uint64_t stop = MIN (end, (blk + 1) << SHIFT);

  if (read_block (c, blk, buf, err) == -1)
    return -1;
  memset (buf + (start & MASK), 0, stop - start);
  *target = block_is_zero (buf) ? DF_CB_ZERO : DF_CB_CACHED;
  return 0;
}

/* WRITE_ZEROES with the range lock held: whole blocks become ZERO
 * (metadata only, so FAST_ZERO is always honoured); the at most two
 * partial blocks are read-modify-written. */
static int
zero_locked (df_cache *c, uint32_t count, uint64_t offset, int *err)
{
  uint64_t end = offset + count, fb0, fb1;
  uint64_t b0 = offset >> SHIFT, b1 = (end - 1) >> SHIFT;
  uint8_t head[BS], tail[BS], ht = DF_CB_ZERO, tt = DF_CB_ZERO;
  bool has_head, has_tail, has_full;
  uint64_t cost = 0;
  int ret = 0;

  has_full = full_blocks (c, count, offset, &fb0, &fb1);
  has_head = !has_full || b0 < fb0;
  has_tail = b1 != b0 && (!has_full || b1 >= fb1);
  if (has_head && zero_partial (c, b0, offset, end, head, &ht, err) == -1)
    return -1;
  if (has_tail && zero_partial (c, b1, offset, end, tail, &tt, err) == -1)
    return -1;
  cost = (has_head ? write_cost (c, b0, 1, &ht) : 0)
         + (has_tail ? write_cost (c, b1, 1, &tt) : 0);
  if (quota_reserve (c, cost, err) == -1)
    return -1;
  if (has_head)
    ret = apply_blocks (c, b0, 1, &ht, head, err);
  if (ret == 0 && has_full)
    ret = apply_blocks (c, fb0, fb1 - fb0, NULL, NULL, err);
  if (ret == 0 && has_tail)
    ret = apply_blocks (c, b1, 1, &tt, tail, err);
  quota_release (c, cost);
  return ret;
}

static int
cache_zero (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  df_cache *c = (df_cache *) b;
  df_cache_range r;
  int ret;

  range_lock (c, &r, offset >> SHIFT, (offset + count - 1) >> SHIFT, true);
  ret = zero_locked (c, count, offset, err);
  range_unlock (c, &r);
  if (ret == 0 && (flags & DF_BLK_FUA) != 0)
    ret = cache_flush (b, err);
  return ret;
}

/* ---- extents ------------------------------------------------------------ */

/* Merges adjacent extents with equal flags before passing them on. */
typedef struct {
  df_extent_cb cb;
  void *opaque;
  bool stopped;           /* the caller's callback asked to stop */
  uint64_t off, len;      /* pending extent */
  uint32_t flags;
  uint64_t clip_lo, clip_hi;  /* current base run, for base callbacks */
} extent_emitter;

static int
emit_extent (extent_emitter *e, uint64_t off, uint64_t len, uint32_t flags)
{
  if (e->stopped)
    return -1;
  if (e->len != 0 && e->flags == flags && e->off + e->len == off)
    {
      e->len += len;
      return 0;
    }
  if (e->len != 0 && e->cb (e->opaque, e->off, e->len, e->flags) == -1)
    {
      e->stopped = true;
      return -1;
    }
  e->off = off;
  e->len = len;
  e->flags = flags;
  return 0;
}

/* Callback given to the base: clip to the current BASE run. */
static int
base_extent_cb (void *opaque, uint64_t off, uint64_t len, uint32_t flags)
{
  extent_emitter *e = opaque;
  uint64_t lo = MAX (off, e->clip_lo), hi = MIN (off + len, e->clip_hi);

  if (hi <= lo)
    return hi >= e->clip_hi ? -1 : 0;
  if (emit_extent (e, lo, hi - lo, flags) == -1)
    return -1;
  e->clip_lo = hi;
  return hi >= e->clip_hi ? -1 : 0;
}

static int
base_extents (df_cache *c, extent_emitter *e, uint64_t off, uint64_t end,
              int *err)
{
  e->clip_lo = off;
  e->clip_hi = end;
  if (df_blk_extents (c->base, (uint32_t) (end - off), off, base_extent_cb,
                      e, err) == -1)
    return -1;
  /* The base stopped early: report the rest as allocated data. */
  if (!e->stopped && e->clip_lo < end)
    emit_extent (e, e->clip_lo, end - e->clip_lo, 0);
  return 0;
}

static int
cache_extents (df_blk *b, uint32_t count, uint64_t offset, df_extent_cb cb,
               void *opaque, int *err)
{
  df_cache *c = (df_cache *) b;
  extent_emitter e = { .cb = cb, .opaque = opaque };
  uint64_t end = offset + count, last = (end - 1) >> SHIFT;
  df_cache_range r;
  int ret = 0;

  range_lock (c, &r, offset >> SHIFT, last, false);
  for (uint64_t pos = offset; pos < end && ret == 0 && !e.stopped;)
    {
      uint64_t blk = pos >> SHIFT;
      uint64_t run_end = MIN ((blk + state_run (c, blk, last + 1)) << SHIFT,
                              end);
      if (c->state[blk] == DF_CB_BASE)
        ret = base_extents (c, &e, pos, run_end, err);
      else
        emit_extent (&e, pos, run_end - pos,
                     c->state[blk] == DF_CB_ZERO
                       ? DF_EXTENT_HOLE | DF_EXTENT_ZERO : 0);
      pos = run_end;
    }
  range_unlock (c, &r);
  if (ret == 0 && !e.stopped && e.len != 0)
    cb (opaque, e.off, e.len, e.flags);
  return ret;
}

/* ---- open / close ------------------------------------------------------- */

static void
cache_destroy (df_blk *b)
{
  df_cache *c = (df_cache *) b;

  if (c->store != NULL)
    c->store->close (c);
  if (c->writer_free != NULL)
    c->writer_free (c->writer_data);
  g_assert (c->ranges == NULL);
  df_blk_unref (c->base);
  state_free (c->state, c->nblocks);
  g_free (c->dir);
  g_mutex_clear (&c->lock);
  g_cond_clear (&c->range_cond);
  g_free (c);
}

static const df_blk_ops cache_ops = {
  .name = "cache",
  .pread = cache_pread,
  .pwrite = cache_pwrite,
  .flush = cache_flush,
  .trim = cache_trim,
  .zero = cache_zero,
  .extents = cache_extents,
  .span = cache_span,
  .destroy = cache_destroy,
};

df_blk *
df_cache_open (df_blk *base, const char *dir, const DfCacheMode *mode,
               uint64_t quota, GError **err)
{
  const DfCacheModeDesc *desc;
  df_cache *c;

  g_return_val_if_fail (base != NULL && dir != NULL && mode != NULL, NULL);
  desc = df_cache_mode_desc (mode);
  g_return_val_if_fail (desc != NULL, NULL);
  if (desc->open_store == NULL)
    {
      /* Its writes live elsewhere (hypervisor: the VM's overlay): nothing
       * is created in dir; df_cache_mode_open serves the base. */
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "cache mode %s has no server-side cache (%s): serve the "
                   "version read-only instead", desc->name, dir);
      return NULL;
    }
  if (g_mkdir_with_parents (dir, 0700) < 0)
    {
      df_set_error_errno (err, errno, "create cache directory %s", dir);
      return NULL;
    }
  if (!df_adopt_owner (-1, dir, err))
    return NULL;
  c = g_new0 (df_cache, 1);
  df_blk_init (&c->blk, &cache_ops, base->size, false);
  c->blk.can_fast_zero = true;
  c->base = df_blk_ref (base);
  c->dir = g_strdup (dir);
  c->mode = *mode;
  c->quota = quota;
  c->nblocks = (base->size + MASK) >> SHIFT;
  g_mutex_init (&c->lock);
  g_cond_init (&c->range_cond);
  c->state = state_alloc (c->nblocks);
  if (c->state == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "cache %s: no memory for the map of %" G_GUINT64_FORMAT
                   " blocks", dir, c->nblocks);
      cache_destroy (&c->blk);
      return NULL;
    }
  if (!desc->open_store (c, err))
    {
      c->store = NULL;
      cache_destroy (&c->blk);
      return NULL;
    }
  return &c->blk;
}

df_blk *
df_cache_mode_open (df_blk *base, const char *dir, const DfCacheMode *mode,
                    uint64_t quota, GError **err)
{
  const DfCacheModeDesc *desc = df_cache_mode_desc (mode);

  g_return_val_if_fail (desc != NULL, NULL);
  if (desc->open_store != NULL)
    return df_cache_open (base, dir, mode, quota, err);
  g_return_val_if_fail (base->readonly, NULL);
  return df_blk_ref (base);
}

void
df_cache_set_writer (df_blk *b, const DfCacheWriter *w, void *data,
                     GDestroyNotify free_data)
{
  df_cache *c = (df_cache *) b;

  if (!df_cache_is_cache (b) || !df_cache_mode_desc (&c->mode)->persistent)
    {
      if (free_data != NULL)
        free_data (data);
      return;
    }
  g_assert (c->writer.may_write == NULL);
  c->writer = *w;
  c->writer_data = data;
  c->writer_free = free_data;
}

bool
df_cache_may_write (df_cache *c, gint64 *t0)
{
  *t0 = df_real_ns ();
  return c->writer.may_write == NULL || c->writer.may_write (c->writer_data);
}

void
df_cache_wrote (df_cache *c, const char *op, gint64 t0)
{
  if (c->writer.wrote != NULL)
    c->writer.wrote (c->writer_data, op, t0);
}

void
df_cache_abandon (df_blk *b)
{
  if (df_cache_is_cache (b))
    g_atomic_int_set (&((df_cache *) b)->abandoned, 1);
}

bool
df_cache_is_cache (df_blk *b)
{
  return b->ops == &cache_ops;
}

void
df_cache_get_stats (df_blk *cache, DfCacheStats *out)
{
  df_cache *c = (df_cache *) cache;

  g_return_if_fail (cache->ops == &cache_ops);
  g_mutex_lock (&c->lock);
  out->cached_bytes = c->cached_blocks << SHIFT;
  out->ram_bytes = c->ram_bytes;
  out->quota_bytes = c->quota;
  out->quota_hits = c->quota_hits;
  g_mutex_unlock (&c->lock);
}

static bool
discard_one (const char *dir, const char *name, GError **err)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);

  if (unlink (path) < 0 && errno != ENOENT)
    {
      df_set_error_errno (err, errno, "remove %s", path);
      return false;
    }
  return true;
}

const DfCacheModeDesc *
df_cache_dir_holds (const char *dir)
{
  guint n;
  const DfCacheModeDesc *modes = df_cache_modes (&n);

  for (guint i = 0; i < n; i++)
    if (modes[i].files != NULL)
      {
        g_autofree char *p = g_build_filename (dir, modes[i].files[0], NULL);
        if (g_file_test (p, G_FILE_TEST_EXISTS))
          return &modes[i];
      }
  return NULL;
}

bool
df_cache_discard_dir (const char *dir, GError **err)
{
  const DfCacheModeDesc *modes;
  g_autoptr (GDir) d = NULL;
  const char *name;
  guint n;

  modes = df_cache_modes (&n);
  for (guint i = 0; i < n; i++)
    for (const char *const *f = modes[i].files; f != NULL && *f != NULL; f++)
      if (!discard_one (dir, *f, err))
        return false;
  d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return true; /* no directory: nothing to discard */
  while ((name = g_dir_read_name (d)) != NULL)
    if (g_str_has_prefix (name, DF_CACHE_TMP_PREFIX)
        && !discard_one (dir, name, err))
      return false;
  return true;
}
