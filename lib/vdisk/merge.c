/* diskfarm: version layers - seal a maintenance cache into a qcow2 layer,
 * merge the top layers of a chain into one layer (or a standalone base).
 *
 * Both build a set of output clusters (64 KiB) that must be written, then
 * read them through a block stack that already gives the right guest
 * content (the cache over the parent chain, or the flattened chain), so
 * partially written clusters are filled from below.  Output goes to a new
 * file (O_EXCL) that the writer fsyncs; the caller renames it into place
 * and records it in the farm DB.
 *
 * Seal reads each cluster and gives those that read all zeroes the qcow2 v3
 * zero flag (it must still hide the backing file).  Merge decides from the
 * chain's extent map instead: a cluster the map says reads zero gets the
 * zero flag without being read, the others are data.  So the whole layout
 * is known before any data is read; the file is written front to back
 * (planned writer) in 4 MiB batches of consecutive clusters and hashed as
 * it goes, and the map's holes cost nothing.
 */
#include "cache_int.h"
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUT_CLUSTER_BITS 16
#define OUT_CLUSTER_SIZE (1u << OUT_CLUSTER_BITS)

/* Clusters to write: one bit per output cluster. */
typedef struct {
  uint64_t n;          /* clusters covering the virtual size */
  uint64_t marked;
  guint8 *bits;        /* owned */
} ClusterSet;

static void
cset_init (ClusterSet *s, uint64_t size)
{
  s->n = (size + OUT_CLUSTER_SIZE - 1) >> OUT_CLUSTER_BITS;
  s->marked = 0;
  s->bits = g_malloc0 (s->n / 8 + 1);
}

static void
cset_mark_range (ClusterSet *s, uint64_t off, uint64_t len)
{
  if (len == 0)
    return;
  uint64_t first = off >> OUT_CLUSTER_BITS;
  uint64_t last = MIN ((off + len - 1) >> OUT_CLUSTER_BITS, s->n - 1);
  for (uint64_t c = first; c <= last; c++)
    if (!(s->bits[c / 8] & (1u << (c % 8))))
      {
        s->bits[c / 8] |= (guint8) (1u << (c % 8));
        s->marked++;
      }
}

static bool
cset_has (const ClusterSet *s, uint64_t c)
{
  return s->bits[c / 8] & (1u << (c % 8));
}

static bool
all_zero (const guint8 *p, size_t n)
{
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

/* Read every marked cluster through src and write it to w.  Frees w
 * (finish or abort) in every case. */
static bool
copy_marked (df_blk *src, const ClusterSet *s, df_qcow2_writer *w,
             df_progress_cb progress, void *opaque, GError **err)
{
  g_autofree guint8 *buf = g_malloc (OUT_CLUSTER_SIZE);
  uint64_t done = 0, total = s->marked * OUT_CLUSTER_SIZE;
  for (uint64_t c = 0; c < s->n; c++)
    {
      if (!cset_has (s, c))
        continue;
      uint64_t off = c << OUT_CLUSTER_BITS;
      uint32_t len = (uint32_t) MIN ((uint64_t) OUT_CLUSTER_SIZE,
                                     src->size - off);
      int errnum = 0;
      memset (buf + len, 0, OUT_CLUSTER_SIZE - len);
      if (df_blk_pread (src, buf, len, off, &errnum) < 0)
        {
          df_set_error_errno (err, errnum, "read guest offset %"
                              G_GUINT64_FORMAT, off);
          df_qcow2_writer_abort (w);
          return false;
        }
      bool ok = all_zero (buf, len) ? df_qcow2_writer_put_zero (w, c, err)
                                    : df_qcow2_writer_put (w, c, buf, err);
      if (!ok)
        {
          df_qcow2_writer_abort (w);
          return false;
        }
      done += OUT_CLUSTER_SIZE;
      if (progress)
        progress (opaque, done, total);
      if (!df_interrupt_check (err))
        {
          df_qcow2_writer_abort (w);
          return false;
        }
    }
  return df_qcow2_writer_finish (w, err);
}

/* A signal that came while the finished file was being synced still
 * cancels: remove it (the caller has not published it yet). */
static bool
finished_uninterrupted (const char *path, GError **err)
{
  if (df_interrupt_check (err))
    return true;
  unlink (path);
  return false;
}

/* ---- seal ---------------------------------------------------------------- */

/* Mark the clusters holding a block the maintenance session wrote. */
static void
mark_cache_blocks (const df_cache *c, ClusterSet *s)
{
  for (uint64_t b = 0; b < c->nblocks; b++)
    if (c->state[b] != DF_CB_BASE)
      cset_mark_range (s, b << DF_CACHE_BLOCK_SHIFT, DF_CACHE_BLOCK_SIZE);
}

bool
df_vdisk_seal_layer (df_blk *base, const char *maint_dir, const char *path,
                     const char *backing, df_progress_cb progress,
                     void *opaque, uint64_t *written, GError **err)
{
  DfCacheMode mode = { .kind = DF_CACHE_PERSISTENT };
  g_autoptr (GError) local = NULL;
  g_autoptr (df_blk) cache = df_cache_open (base, maint_dir, &mode, 0, &local);
  if (!cache)
    {
      if (g_error_matches (local, DF_ERROR, DF_ERROR_BUSY))
        g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                     "the maintenance cache %s is in use by a session: shut "
                     "the maintenance device down first", maint_dir);
      else
        g_propagate_error (err, g_steal_pointer (&local));
      return false;
    }
  ClusterSet s;
  cset_init (&s, cache->size);
  mark_cache_blocks ((const df_cache *) cache, &s);
  df_qcow2_writer *w = df_qcow2_writer_new (path, cache->size,
                                            OUT_CLUSTER_BITS, backing, err);
  bool ok = w && copy_marked (cache, &s, w, progress, opaque, err)
            && finished_uninterrupted (path, err);
  if (ok && written)
    *written = s.marked * OUT_CLUSTER_SIZE;
  g_free (s.bits);
  return ok;
}

/* ---- merge --------------------------------------------------------------- */

/* Mark every range one layer file allocates (data, zero, compressed). */
static bool
mark_layer (const DfChainLayer *in, ClusterSet *s, GError **err)
{
  int fd = open (in->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    {
      df_set_error_errno (err, errno, "open %s", in->path);
      return false;
    }
  DfChainLayer layer = { .path = in->path, .file_size = in->file_size };
  g_autoptr (GArray) runs = g_array_new (FALSE, FALSE, sizeof (DfRun));
  g_autofree char *backing_fmt = NULL;
  bool ok = in->format == DF_FMT_QCOW2
              ? df_qcow2_map (fd, &layer, 0, &backing_fmt, runs, err)
              : df_raw_map (fd, &layer, 0, runs, err);
  close (fd);
  g_free (layer.backing);
  if (!ok)
    return false;
  for (guint i = 0; i < runs->len; i++)
    {
      const DfRun *r = &g_array_index (runs, DfRun, i);
      if (r->kind != DF_RUN_UNALLOC
          && !(in->format == DF_FMT_RAW && r->kind == DF_RUN_ZERO))
        cset_mark_range (s, r->guest, r->length);
    }
  return true;
}

#define MERGE_BATCH 64u   /* clusters per read and write: 4 MiB */

static int
mark_data_extent (void *opaque, uint64_t offset, uint64_t length,
                  uint32_t flags)
{
  if (!(flags & DF_EXTENT_ZERO))
    cset_mark_range (opaque, offset, length);
  return 0;
}

/* Mark the clusters where the flattened chain holds any data. */
static bool
mark_chain_data (df_blk *chain, ClusterSet *d, GError **err)
{
  for (uint64_t pos = 0; pos < chain->size;)
    {
      uint32_t n = (uint32_t) MIN ((uint64_t) DF_BLK_MAX_REQUEST,
                                   chain->size - pos);
      int errnum = 0;
      if (df_blk_extents (chain, n, pos, mark_data_extent, d, &errnum) < 0)
        {
          df_set_error_errno (err, errnum, "map guest offset %"
                              G_GUINT64_FORMAT, pos);
          return false;
        }
      pos += n;
    }
  return true;
}

/* Keep in s only the clusters also in d (s: to write; d: holding data);
 * declare the dropped ones zero and the kept ones data.  *n_data receives
 * the number kept. */
static bool
plan_clusters (ClusterSet *s, const ClusterSet *d, df_qcow2_writer *w,
               uint64_t *n_data, GError **err)
{
  *n_data = 0;
  for (uint64_t c = 0; c < s->n; c++)
    {
      if (s->bits[c / 8] == 0)
        {
          c |= 7;                     /* skip the empty byte */
          continue;
        }
      if (!cset_has (s, c))
        continue;
      if (!cset_has (d, c))
        {
          s->bits[c / 8] &= (guint8) ~(1u << (c % 8));
          if (!df_qcow2_writer_put_zero (w, c, err))
            return false;
          continue;
        }
      if (!df_qcow2_writer_plan_data (w, c, err))
        return false;
      (*n_data)++;
    }
  return true;
}

/* Read count clusters from first on through src into buf (zero-padded
 * past the virtual size; from df_qcow2_writer_run_buffer) and put them. */
static bool
copy_batch (df_blk *src, df_qcow2_writer *w, uint8_t *buf, uint64_t first,
            uint32_t count, GError **err)
{
  uint64_t off = first << OUT_CLUSTER_BITS;
  size_t want = (size_t) count << OUT_CLUSTER_BITS;
  uint32_t len = (uint32_t) MIN ((uint64_t) want, src->size - off);
  int errnum = 0;

  memset (buf + len, 0, want - len);
  if (df_blk_pread (src, buf, len, off, &errnum) < 0)
    {
      df_set_error_errno (err, errnum, "read guest offset %" G_GUINT64_FORMAT,
                          off);
      return false;
    }
  return df_qcow2_writer_put_run (w, first, count, buf, err);
}

/* Write the data clusters of s (all planned) in order, in batches of up to
 * MERGE_BATCH consecutive clusters. */
static bool
copy_planned (df_blk *src, const ClusterSet *s, uint64_t n_data,
              df_qcow2_writer *w, df_progress_cb progress, void *opaque,
              GError **err)
{
  uint64_t done = 0, total = n_data << OUT_CLUSTER_BITS;

  for (uint64_t c = 0; c < s->n;)
    {
      if (!cset_has (s, c))
        {
          c++;
          continue;
        }
      uint32_t max = 0;
      uint8_t *buf = df_qcow2_writer_run_buffer (w, &max);
      uint32_t count = 1;
      while (count < MIN (MERGE_BATCH, max) && c + count < s->n
             && cset_has (s, c + count))
        count++;
      if (!copy_batch (src, w, buf, c, count, err))
        return false;
      c += count;
      done += (uint64_t) count << OUT_CLUSTER_BITS;
      if (progress)
        progress (opaque, done, total);
      if (!df_interrupt_check (err))
        return false;
    }
  return true;
}

/* Plan, write and finish w from chain; frees w in every case. */
static bool
merge_write (df_blk *chain, ClusterSet *s, df_qcow2_writer *w,
             df_progress_cb progress, void *opaque, char sha256[65],
             GError **err)
{
  ClusterSet d;
  uint64_t n_data = 0;

  cset_init (&d, chain->size);
  bool ok = mark_chain_data (chain, &d, err)
            && plan_clusters (s, &d, w, &n_data, err)
            && df_qcow2_writer_start_data (w, err)
            && copy_planned (chain, s, n_data, w, progress, opaque, err);
  g_free (d.bits);
  if (!ok)
    {
      df_qcow2_writer_abort (w);
      return false;
    }
  return df_qcow2_writer_finish_sha256 (w, sha256, err);
}

bool
df_vdisk_merge_layers_sha256 (const char *top_path, guint n_layers,
                              const char *path, const char *backing,
                              df_progress_cb progress, void *opaque,
                              char sha256[65], GError **err)
{
  g_autoptr (df_blk) chain = df_chain_open (top_path, DF_FMT_UNKNOWN, err);
  if (!chain)
    return false;
  guint n = 0;
  const DfChainLayer *layers = df_chain_layers (chain, &n);
  if (n_layers == 0 || n_layers > n || (n_layers == n) != (backing == NULL))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "cannot merge %u of the %u layers of %s %s a backing "
                   "file", n_layers, n, top_path, backing ? "onto" : "without");
      return false;
    }
  ClusterSet s;
  cset_init (&s, chain->size);
  bool ok = true;
  for (guint i = 0; ok && i < n_layers; i++)
    ok = mark_layer (&layers[i], &s, err);
  df_qcow2_writer *w = ok ? df_qcow2_writer_new (path, chain->size,
                                                 OUT_CLUSTER_BITS, backing,
                                                 err) : NULL;
  ok = w && merge_write (chain, &s, w, progress, opaque, sha256, err)
       && finished_uninterrupted (path, err);
  g_free (s.bits);
  return ok;
}

bool
df_vdisk_merge_layers (const char *top_path, guint n_layers, const char *path,
                       const char *backing, df_progress_cb progress,
                       void *opaque, GError **err)
{
  char sha256[65];

  return df_vdisk_merge_layers_sha256 (top_path, n_layers, path, backing,
                                       progress, opaque, sha256, err);
}
