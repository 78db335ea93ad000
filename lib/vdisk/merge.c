/* diskfarm: version layers - seal a maintenance cache into a qcow2 layer,
 * merge the top layers of a chain into one layer (or a standalone base).
 *
 * Both build a set of output clusters (64 KiB) that must be written, then
 * read each of them whole through a block stack that already gives the
 * right guest content (the cache over the parent chain, or the flattened
 * chain), so partially written clusters are filled from below.  A cluster
 * that reads all zeroes gets the qcow2 v3 zero flag (it must still hide
 * the backing file).  Output goes to a new file (O_EXCL) that the writer
 * fsyncs; the caller renames it into place and records it in the farm DB.
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
    }
  return df_qcow2_writer_finish (w, err);
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
  DfCacheMode mode = { DF_CACHE_PERSISTENT, 0 };
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
  bool ok = w && copy_marked (cache, &s, w, progress, opaque, err);
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

bool
df_vdisk_merge_layers (const char *top_path, guint n_layers, const char *path,
                       const char *backing, df_progress_cb progress,
                       void *opaque, GError **err)
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
  ok = w && copy_marked (chain, &s, w, progress, opaque, err);
  g_free (s.bits);
  return ok;
}
