/* diskfarm: qcow2 v3 layer writer and whole-disk copies.
 *
 * Layout of a written file, in cluster order:
 *   0            header + extensions (backing format) + backing name
 *   1..          data clusters, in the order they were put
 *   then         L2 tables, L1 table, refcount table, refcount blocks
 * Only data clusters are written while putting; the metadata is computed and
 * written at finish, so an abandoned file is never mistaken for an image
 * (its header stays zero until the very end).  refcount_order is 4 and every
 * used cluster has refcount 1, so L1/L2 entries carry the COPIED flag.
 *
 * Planned writers (df_qcow2_writer_plan_data, used by merge) declare every
 * cluster before writing any data, so the layout is known up front and the
 * file goes out front to back, hashed (SHA-256) in file order as it is
 * written: no second pass to hash it.  Their layout is
 *   0            header (hashed at start_data, written last, so an
 *                abandoned file still has a zero header)
 *   1..          L1 table, refcount table, refcount blocks, L2 tables
 *   then         data clusters, in increasing guest cluster order
 * Writeback of the data is started as it goes (sync_file_range), so the
 * final fsync mostly waits for what is already in flight. */
#include "config.h"
#include "common.h"
#include "privilege.h"
#include "qcow2.h"
#include "byteorder.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (4u * 1024 * 1024)
#define WRITEBACK_CHUNK (32u * 1024 * 1024)  /* start writeback this often */
#define RING_SLOTS 6                          /* run buffers in flight */
#define RING_BYTES (4u * 1024 * 1024)
#define DIRECT_ALIGN 4096

/* A run buffer: filled by the caller, then written (writer thread) and
 * hashed (hasher thread) at the same time; free again when both are done. */
typedef struct {
  uint8_t *buf;             /* owned, ring_bytes, DIRECT_ALIGN-aligned */
  size_t len;               /* bytes to write and hash */
  uint64_t off;             /* file offset */
  gint pending;             /* stages still using buf */
} RingSlot;

static RingSlot ring_stop;  /* ends a stage thread */

/* A worker thread of the pipeline: work runs on every slot queued on q,
 * in order, until ring_stop; each slot is released after its work. */
typedef struct {
  GThread *thread;          /* owned, or NULL */
  GAsyncQueue *q;           /* owned: RingSlot* in file order */
  void (*work) (df_qcow2_writer *w, const RingSlot *r);
  df_qcow2_writer *w;       /* borrowed: the writer the stage serves */
} Stage;

struct df_qcow2_writer {
  int fd;                   /* owned */
  char *path;               /* owned */
  uint64_t virtual_size;
  unsigned cluster_bits;
  uint32_t cluster_size;
  uint64_t n_clusters;      /* guest clusters */
  char *backing;            /* owned, or NULL */
  uint32_t l1_size;
  uint64_t **l2;            /* l1_size tables of host-endian entries */
  uint64_t next_free;       /* host offset of the next free cluster */
  /* planned writers only */
  bool planned;             /* plan_data was called */
  bool started;             /* start_data done: data clusters go out */
  uint64_t planned_last;    /* last planned data cluster + 1 */
  uint64_t planned_end;     /* host end of the planned data */
  uint64_t data_start;      /* host offset of the first data cluster */
  uint8_t *header;          /* owned: hashed at start, written at finish */
  EVP_MD_CTX *sha;          /* owned: file bytes [0, hashed_to) */
  uint64_t hashed_to;
  uint64_t synced_to;       /* writeback started for [0, synced_to) */
  /* put_run data is written and hashed by two worker threads; the hasher
   * alone touches sha, the writer alone dfd and synced_to while they run;
   * the caller fills the buffers run_buffer hands out */
  RingSlot ring[RING_SLOTS];
  size_t ring_bytes;
  GAsyncQueue *free_q;      /* owned: RingSlot* ready to fill */
  Stage hasher;
  Stage writer;
  RingSlot *filling;        /* handed out by run_buffer, not yet put */
  int dfd;                  /* owned O_DIRECT fd for the data, or -1 */
  gint hash_failed;
  gint write_errno;         /* first failed data write, 0 if none */
};

/* Wait for a stage to finish what is queued and end it. */
static void
stage_stop (Stage *st)
{
  if (st->thread == NULL)
    return;
  g_async_queue_push (st->q, &ring_stop);
  g_thread_join (st->thread);
  st->thread = NULL;
}

/* The first failed data write, as an error. */
static bool
check_write_errno (df_qcow2_writer *w, GError **err)
{
  int e = g_atomic_int_get (&w->write_errno);

  if (e == 0)
    return true;
  df_set_error_errno (err, e, "write %s", w->path);
  return false;
}

static void
writer_free (df_qcow2_writer *w)
{
  stage_stop (&w->writer);
  stage_stop (&w->hasher);
  if (w->fd >= 0)
    close (w->fd);
  if (w->dfd >= 0)
    close (w->dfd);
  for (guint i = 0; i < RING_SLOTS; i++)
    g_aligned_free (w->ring[i].buf);
  g_clear_pointer (&w->free_q, g_async_queue_unref);
  g_clear_pointer (&w->hasher.q, g_async_queue_unref);
  g_clear_pointer (&w->writer.q, g_async_queue_unref);
  for (uint32_t i = 0; i < w->l1_size; i++)
    g_free (w->l2[i]);
  g_free (w->l2);
  g_free (w->header);
  if (w->sha != NULL)
    EVP_MD_CTX_free (w->sha);
  g_free (w->backing);
  df_temp_unregister (w->path);
  g_free (w->path);
  g_free (w);
}

static bool
writer_check_args (uint64_t virtual_size, unsigned cluster_bits,
                   const char *backing, GError **err)
{
  if (cluster_bits < 9 || cluster_bits > 21)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "cluster_bits %u out of range 9..21", cluster_bits);
      return false;
    }
  if (virtual_size > DF_QCOW2_MAX_VIRTUAL_SIZE)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "virtual size %" G_GUINT64_FORMAT " too large",
                   virtual_size);
      return false;
    }
  size_t blen = backing != NULL ? strlen (backing) : 0;
  /* header 104 + backing format ext 16 + end ext 8 + name */
  if (blen > DF_QCOW2_MAX_BACKING_NAME
      || 104 + 16 + 8 + blen > (1u << cluster_bits))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "backing file name of %zu bytes does not fit the header",
                   blen);
      return false;
    }
  return true;
}

/* Takes ownership of fd. */
static df_qcow2_writer *
writer_new_fd (int fd, const char *path, uint64_t virtual_size,
               unsigned cluster_bits, const char *backing, GError **err)
{
  if (!writer_check_args (virtual_size, cluster_bits, backing, err))
    {
      close (fd);
      return NULL;
    }
  df_qcow2_writer *w = g_new0 (df_qcow2_writer, 1);
  w->fd = fd;
  w->dfd = -1;
  w->path = g_strdup (path);
  df_temp_register (w->path);
  w->virtual_size = virtual_size;
  w->cluster_bits = cluster_bits;
  w->cluster_size = 1u << cluster_bits;
  w->n_clusters = (virtual_size + w->cluster_size - 1) >> cluster_bits;
  uint64_t per_l2 = w->cluster_size / 8;
  w->l1_size = (uint32_t) MAX (1, (w->n_clusters + per_l2 - 1) / per_l2);
  if ((uint64_t) w->l1_size * 8 > DF_QCOW2_MAX_L1_BYTES)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "virtual size %" G_GUINT64_FORMAT " needs too large an "
                   "L1 table at cluster_bits %u", virtual_size, cluster_bits);
      writer_free (w);
      return NULL;
    }
  w->l2 = g_new0 (uint64_t *, w->l1_size);
  w->backing = g_strdup (backing);
  w->next_free = w->cluster_size;   /* cluster 0: header */
  return w;
}

df_qcow2_writer *
df_qcow2_writer_new (const char *path, uint64_t virtual_size,
                     unsigned cluster_bits, const char *backing,
                     GError **err)
{
  if (!writer_check_args (virtual_size, cluster_bits, backing, err))
    return NULL;
  int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    {
      if (errno == EEXIST)
        g_set_error (err, DF_ERROR, DF_ERROR_EXISTS, "%s already exists",
                     path);
      else
        df_set_error_errno (err, errno, "create %s", path);
      return NULL;
    }
  if (!df_adopt_owner (fd, path, err))
    {
      close (fd);
      unlink (path);
      return NULL;
    }
  return writer_new_fd (fd, path, virtual_size, cluster_bits, backing, err);
}

/* L2 slot of a guest cluster, allocating its table. */
static uint64_t *
writer_slot (df_qcow2_writer *w, uint64_t idx, GError **err)
{
  if (idx >= w->n_clusters)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "cluster %" G_GUINT64_FORMAT " beyond the virtual size",
                   idx);
      return NULL;
    }
  uint64_t per_l2 = w->cluster_size / 8;
  uint64_t **t = &w->l2[idx / per_l2];
  if (*t == NULL)
    *t = g_new0 (uint64_t, per_l2);
  uint64_t *slot = &(*t)[idx % per_l2];
  if (*slot != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "cluster %" G_GUINT64_FORMAT " written twice", idx);
      return NULL;
    }
  return slot;
}

bool
df_qcow2_writer_put (df_qcow2_writer *w, uint64_t cluster_index,
                     const void *data, GError **err)
{
  g_assert (!w->planned);
  uint64_t *slot = writer_slot (w, cluster_index, err);

  if (slot == NULL)
    return false;
  if (df_pwrite_all (w->fd, data, w->cluster_size, w->next_free) < 0)
    {
      df_set_error_errno (err, errno, "write %s", w->path);
      return false;
    }
  *slot = w->next_free | DF_QCOW2_OFLAG_COPIED;
  w->next_free += w->cluster_size;
  return true;
}

bool
df_qcow2_writer_put_zero (df_qcow2_writer *w, uint64_t cluster_index,
                          GError **err)
{
  g_assert (!w->started);
  uint64_t *slot = writer_slot (w, cluster_index, err);

  if (slot == NULL)
    return false;
  *slot = DF_QCOW2_OFLAG_ZERO;
  return true;
}

/* ---- finish ------------------------------------------------------------ */

typedef struct {
  uint64_t *l2_off;         /* per L1 entry, 0 when no table */
  uint64_t l1_off;
  uint64_t rt_off;
  uint64_t rt_clusters;
  uint64_t rb_off;
  uint64_t rb_count;
  uint64_t total;           /* clusters in the file */
} Layout;

static uint64_t
div_up (uint64_t a, uint64_t b)
{
  return (a + b - 1) / b;
}

/* Refcount table and blocks covering n_other clusters plus themselves. */
static void
refcount_sizes (uint64_t n_other, uint64_t cs, uint64_t *rt_out,
                uint64_t *rb_out)
{
  uint64_t per_block = cs / 2;         /* 16-bit refcounts */
  uint64_t rb = 1, rt = 1;

  for (;;)
    {
      uint64_t nrb = div_up (n_other + rb + rt, per_block);
      uint64_t nrt = div_up (nrb * 8, cs);
      if (nrb <= rb && nrt <= rt)
        break;
      rb = MAX (rb, nrb);
      rt = MAX (rt, nrt);
    }
  *rt_out = rt;
  *rb_out = rb;
}

/* Give each L2 table a cluster from pos on; returns the end. */
static uint64_t
place_l2 (df_qcow2_writer *w, Layout *lo, uint64_t pos)
{
  lo->l2_off = g_new0 (uint64_t, w->l1_size);
  for (uint32_t i = 0; i < w->l1_size; i++)
    if (w->l2[i] != NULL)
      {
        lo->l2_off[i] = pos;
        pos += w->cluster_size;
      }
  return pos;
}

/* Unplanned: L2 tables, L1, refcount table, refcount blocks after data. */
static void
plan_layout (df_qcow2_writer *w, Layout *lo)
{
  uint64_t cs = w->cluster_size;
  uint64_t pos = place_l2 (w, lo, w->next_free);

  lo->l1_off = pos;
  pos += div_up ((uint64_t) w->l1_size * 8, cs) * cs;
  uint64_t n0 = pos / cs, rt, rb;
  refcount_sizes (n0, cs, &rt, &rb);
  lo->rt_off = pos;
  lo->rt_clusters = rt;
  lo->rb_off = pos + rt * cs;
  lo->rb_count = rb;
  lo->total = n0 + rt + rb;
}

/* Planned: header, L1, refcount table and blocks, L2 tables, then the
 * data clusters (n_data of them).  Returns where the data starts. */
static uint64_t
plan_layout_front (df_qcow2_writer *w, uint64_t n_data, Layout *lo)
{
  uint64_t cs = w->cluster_size;
  uint64_t l1_clusters = div_up ((uint64_t) w->l1_size * 8, cs);
  uint64_t n_l2 = 0, rt, rb;

  for (uint32_t i = 0; i < w->l1_size; i++)
    n_l2 += w->l2[i] != NULL;
  refcount_sizes (1 + l1_clusters + n_l2 + n_data, cs, &rt, &rb);
  lo->l1_off = cs;
  lo->rt_off = lo->l1_off + l1_clusters * cs;
  lo->rt_clusters = rt;
  lo->rb_off = lo->rt_off + rt * cs;
  lo->rb_count = rb;
  uint64_t data_start = place_l2 (w, lo, lo->rb_off + rb * cs);
  lo->total = data_start / cs + n_data;
  return data_start;
}

/* Write len bytes at off.  A planned writer also hashes them, so they must
 * continue the bytes hashed so far (front-to-back order). */
static bool
emit (df_qcow2_writer *w, const void *buf, size_t len, uint64_t off,
      GError **err)
{
  if (w->sha != NULL)
    {
      g_assert (off == w->hashed_to);
      if (EVP_DigestUpdate (w->sha, buf, len) != 1)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_IO, "SHA-256 update failed");
          return false;
        }
      w->hashed_to += len;
    }
  if (df_pwrite_all (w->fd, buf, len, off) < 0)
    {
      df_set_error_errno (err, errno, "write %s", w->path);
      return false;
    }
  return true;
}

static bool
write_be64_table (df_qcow2_writer *w, const uint64_t *v, uint64_t n,
                  uint64_t flag_nonzero, uint64_t off, GError **err)
{
  uint64_t bytes = div_up (n * 8, w->cluster_size) * w->cluster_size;
  g_autofree uint64_t *be = g_malloc0 (bytes);

  for (uint64_t i = 0; i < n; i++)
    be[i] = GUINT64_TO_BE (v[i] != 0 ? v[i] | flag_nonzero : 0);
  return emit (w, be, bytes, off, err);
}

/* The L1 table (pointing at lo's L2 tables) and the refcount table
 * (pointing at lo's refcount blocks), each where lo puts it. */
static bool
write_l1_and_rt (df_qcow2_writer *w, const Layout *lo, GError **err)
{
  if (!write_be64_table (w, lo->l2_off, w->l1_size, DF_QCOW2_OFLAG_COPIED,
                         lo->l1_off, err))
    return false;
  g_autofree uint64_t *rt = g_new0 (uint64_t, lo->rb_count);
  for (uint64_t j = 0; j < lo->rb_count; j++)
    rt[j] = lo->rb_off + j * w->cluster_size;
  return write_be64_table (w, rt, lo->rb_count, 0, lo->rt_off, err);
}

static bool
write_tables (df_qcow2_writer *w, const Layout *lo, GError **err)
{
  uint64_t per_l2 = w->cluster_size / 8;

  for (uint32_t i = 0; i < w->l1_size; i++)
    if (w->l2[i] != NULL
        && !write_be64_table (w, w->l2[i], per_l2, 0, lo->l2_off[i], err))
      return false;
  return write_l1_and_rt (w, lo, err);
}

static bool
write_refcounts (df_qcow2_writer *w, const Layout *lo, GError **err)
{
  uint64_t per_block = w->cluster_size / 2;
  g_autofree uint16_t *blk = g_malloc (w->cluster_size);

  for (uint64_t j = 0; j < lo->rb_count; j++)
    {
      for (uint64_t k = 0; k < per_block; k++)
        blk[k] = GUINT16_TO_BE (j * per_block + k < lo->total ? 1 : 0);
      if (!emit (w, blk, w->cluster_size, lo->rb_off + j * w->cluster_size,
                 err))
        return false;
    }
  return true;
}


/* The header cluster for layout lo (newly allocated). */
static uint8_t *
build_header (df_qcow2_writer *w, const Layout *lo)
{
  uint8_t *h = g_malloc0 (w->cluster_size);
  size_t pos = 104;

  df_put_be32 (h, DF_QCOW2_MAGIC);
  df_put_be32 (h + 4, 3);
  df_put_be32 (h + 20, w->cluster_bits);
  df_put_be64 (h + 24, w->virtual_size);
  df_put_be32 (h + 36, w->l1_size);
  df_put_be64 (h + 40, lo->l1_off);
  df_put_be64 (h + 48, lo->rt_off);
  df_put_be32 (h + 56, (uint32_t) lo->rt_clusters);
  df_put_be32 (h + 96, 4);                       /* refcount_order */
  df_put_be32 (h + 100, 104);                    /* header_length */
  if (w->backing != NULL)
    {
      df_put_be32 (h + pos, DF_QCOW2_EXT_BACKING_FMT);
      df_put_be32 (h + pos + 4, 5);
      memcpy (h + pos + 8, "qcow2", 5);
      pos += 16;
    }
  pos += 8;                                   /* end extension: zeros */
  if (w->backing != NULL)
    {
      size_t len = strlen (w->backing);
      df_put_be64 (h + 8, pos);
      df_put_be32 (h + 16, (uint32_t) len);
      memcpy (h + pos, w->backing, len);
    }
  return h;
}

/* The header goes to disk last, unhashed (a planned writer hashed it at
 * start_data). */
static bool
write_header (df_qcow2_writer *w, const uint8_t *h, GError **err)
{
  if (df_pwrite_all (w->fd, h, w->cluster_size, 0) < 0)
    {
      df_set_error_errno (err, errno, "write %s", w->path);
      return false;
    }
  return true;
}

/* Unplanned writer: tables after the data, then the header. */
static bool
finish_tables_last (df_qcow2_writer *w, uint64_t *total, GError **err)
{
  Layout lo = { 0 };
  bool ok;

  plan_layout (w, &lo);
  ok = write_tables (w, &lo, err) && write_refcounts (w, &lo, err);
  if (ok)
    {
      g_autofree uint8_t *h = build_header (w, &lo);
      ok = write_header (w, h, err);
    }
  g_free (lo.l2_off);
  *total = lo.total;
  return ok;
}

/* Planned writer: every planned cluster written, then the header. */
static bool
finish_planned (df_qcow2_writer *w, uint64_t *total, GError **err)
{
  stage_stop (&w->writer);  /* every data write done */
  if (!check_write_errno (w, err))
    return false;
  if (!w->started || w->next_free != w->hashed_to
      || w->next_free != w->planned_end)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s: %" G_GUINT64_FORMAT " planned data bytes were not "
                   "written", w->path,
                   w->started ? w->planned_end - w->next_free : 0);
      return false;
    }
  *total = w->next_free / w->cluster_size;
  return write_header (w, w->header, err);
}

static bool
writer_finish_inner (df_qcow2_writer *w, GError **err)
{
  uint64_t total = 0;
  bool ok = w->planned ? finish_planned (w, &total, err)
                       : finish_tables_last (w, &total, err);

  if (!ok)
    return false;
  if (ftruncate (w->fd, (off_t) (total * w->cluster_size)) < 0
      || fsync (w->fd) < 0)
    {
      df_set_error_errno (err, errno, "sync %s", w->path);
      return false;
    }
  return true;
}

/* Close w->fd (once w is finished) and free w. */
static bool
writer_close (df_qcow2_writer *w, bool ok, GError **err)
{
  if (ok && close (w->fd) < 0)
    {
      df_set_error_errno (err, errno, "close %s", w->path);
      ok = false;
    }
  else if (!ok)
    close (w->fd);
  w->fd = -1;
  writer_free (w);
  return ok;
}

bool
df_qcow2_writer_finish_sha256 (df_qcow2_writer *w, char sha256[65],
                               GError **err)
{
  g_assert (w->planned);
  bool ok = writer_finish_inner (w, err);
  unsigned char md[32];

  stage_stop (&w->hasher);  /* it hashed while the fsync waited */
  if (ok && (g_atomic_int_get (&w->hash_failed)
             || EVP_DigestFinal_ex (w->sha, md, NULL) != 1))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "SHA-256 final failed");
      ok = false;
    }
  if (ok)
    for (int i = 0; i < 32; i++)
      g_snprintf (sha256 + 2 * i, 3, "%02x", md[i]);
  return writer_close (w, ok, err);
}

bool
df_qcow2_writer_finish (df_qcow2_writer *w, GError **err)
{
  if (w->planned)
    {
      char sha[65];
      return df_qcow2_writer_finish_sha256 (w, sha, err);
    }
  return writer_close (w, writer_finish_inner (w, err), err);
}

void
df_qcow2_writer_abort (df_qcow2_writer *w)
{
  if (w == NULL)
    return;
  unlink (w->path);
  writer_free (w);
}

/* ---- planned writers: front to back, hashed ---------------------------- */

bool
df_qcow2_writer_plan_data (df_qcow2_writer *w, uint64_t cluster_index,
                           GError **err)
{
  g_assert (!w->started);
  if (cluster_index < w->planned_last)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "data cluster %" G_GUINT64_FORMAT " planned out of order",
                   cluster_index);
      return false;
    }
  uint64_t *slot = writer_slot (w, cluster_index, err);
  if (slot == NULL)
    return false;
  /* provisional host offset, moved past the metadata by start_data */
  *slot = w->next_free | DF_QCOW2_OFLAG_COPIED;
  w->next_free += w->cluster_size;
  w->planned_last = cluster_index + 1;
  w->planned = true;
  return true;
}

/* Move the provisional data offsets (from cluster 1 on) by delta. */
static void
relocate_data (df_qcow2_writer *w, uint64_t delta)
{
  uint64_t per_l2 = w->cluster_size / 8;

  for (uint32_t i = 0; i < w->l1_size; i++)
    for (uint64_t k = 0; w->l2[i] != NULL && k < per_l2; k++)
      if (w->l2[i][k] & DF_QCOW2_OFLAG_COPIED)
        w->l2[i][k] += delta;
}

/* L1, refcount table, refcount blocks and L2 tables, in file order. */
static bool
write_front_tables (df_qcow2_writer *w, const Layout *lo, GError **err)
{
  uint64_t per_l2 = w->cluster_size / 8;

  if (!write_l1_and_rt (w, lo, err) || !write_refcounts (w, lo, err))
    return false;
  for (uint32_t i = 0; i < w->l1_size; i++)
    if (w->l2[i] != NULL
        && !write_be64_table (w, w->l2[i], per_l2, 0, lo->l2_off[i], err))
      return false;
  return true;
}

bool
df_qcow2_writer_start_data (df_qcow2_writer *w, GError **err)
{
  g_assert (!w->started);
  uint64_t n_data = (w->next_free - w->cluster_size) / w->cluster_size;
  Layout lo = { 0 };

  w->planned = true;
  w->data_start = plan_layout_front (w, n_data, &lo);
  relocate_data (w, w->data_start - w->cluster_size);
  w->planned_end = w->data_start + n_data * w->cluster_size;
  w->header = build_header (w, &lo);
  w->sha = EVP_MD_CTX_new ();
  bool ok = w->sha != NULL
            && EVP_DigestInit_ex (w->sha, EVP_sha256 (), NULL) == 1
            && EVP_DigestUpdate (w->sha, w->header, w->cluster_size) == 1;
  if (!ok)
    g_set_error (err, DF_ERROR, DF_ERROR_IO, "SHA-256 init failed");
  w->hashed_to = w->cluster_size;
  ok = ok && write_front_tables (w, &lo, err);
  g_free (lo.l2_off);
  w->next_free = w->data_start;
  w->synced_to = 0;
  w->started = ok;
  return ok;
}

/* The planned slot of cluster idx, or 0. */
static uint64_t
planned_slot (const df_qcow2_writer *w, uint64_t idx)
{
  uint64_t per_l2 = w->cluster_size / 8;

  if (idx >= w->n_clusters || w->l2[idx / per_l2] == NULL)
    return 0;
  return w->l2[idx / per_l2][idx % per_l2];
}

/* Start writing back what the writer thread wrote through the page cache
 * since the last call, without waiting: the final fsync then mostly waits
 * for I/O already in flight. */
static void
start_writeback (df_qcow2_writer *w, uint64_t end)
{
  if (end - w->synced_to < WRITEBACK_CHUNK)
    return;
  /* advisory: a failure here shows up at fsync */
  (void) sync_file_range (w->fd, (off64_t) w->synced_to,
                          (off64_t) (end - w->synced_to),
                          SYNC_FILE_RANGE_WRITE);
  w->synced_to = end;
}

static void
slot_release (df_qcow2_writer *w, RingSlot *r)
{
  if (g_atomic_int_dec_and_test (&r->pending))
    g_async_queue_push (w->free_q, r);
}

static gpointer
stage_main (gpointer data)
{
  Stage *st = data;

  for (;;)
    {
      RingSlot *r = g_async_queue_pop (st->q);
      if (r == &ring_stop)
        return NULL;
      st->work (st->w, r);
      slot_release (st->w, r);
    }
}

static void
hash_slot (df_qcow2_writer *w, const RingSlot *r)
{
  if (EVP_DigestUpdate (w->sha, r->buf, r->len) != 1)
    g_atomic_int_set (&w->hash_failed, 1);
}

/* Write one run: O_DIRECT when the file system takes it (no page cache
 * copy, no writeback left for fsync), else through the page cache.
 * 0 or an errno. */
static int
write_slot (df_qcow2_writer *w, const RingSlot *r)
{
  if (w->dfd >= 0)
    {
      if (df_pwrite_all (w->dfd, r->buf, r->len, r->off) == 0)
        return 0;
      if (errno != EINVAL)
        return errno;
      close (w->dfd);               /* alignment refused: buffered now */
      w->dfd = -1;
    }
  if (df_pwrite_all (w->fd, r->buf, r->len, r->off) < 0)
    return errno;
  start_writeback (w, r->off + r->len);
  return 0;
}

/* Write one run unless an earlier one failed; the first failure is kept. */
static void
write_slot_once (df_qcow2_writer *w, const RingSlot *r)
{
  if (g_atomic_int_get (&w->write_errno) == 0)
    {
      int e = write_slot (w, r);
      if (e != 0)
        g_atomic_int_set (&w->write_errno, e);
    }
}

static void
stage_start (Stage *st, const char *name,
             void (*work) (df_qcow2_writer *w, const RingSlot *r),
             df_qcow2_writer *w)
{
  st->q = g_async_queue_new ();
  st->work = work;
  st->w = w;
  st->thread = g_thread_new (name, stage_main, st);
}

static void
start_pipeline (df_qcow2_writer *w)
{
  w->ring_bytes = MAX (RING_BYTES, w->cluster_size);
  w->free_q = g_async_queue_new ();
  for (guint i = 0; i < RING_SLOTS; i++)
    {
      w->ring[i].buf = g_aligned_alloc (w->ring_bytes, 1, DIRECT_ALIGN);
      g_async_queue_push (w->free_q, &w->ring[i]);
    }
  /* data offsets are cluster-aligned; EINVAL on open or on a write (tmpfs,
   * 512-byte clusters on a 4K device) falls back to the page cache */
  w->dfd = open (w->path, O_WRONLY | O_DIRECT | O_CLOEXEC);
  stage_start (&w->hasher, "qcow2-sha256", hash_slot, w);
  stage_start (&w->writer, "qcow2-write", write_slot_once, w);
}

void *
df_qcow2_writer_run_buffer (df_qcow2_writer *w, uint32_t *max_clusters)
{
  g_assert (w->started && w->filling == NULL);
  if (w->writer.thread == NULL)
    start_pipeline (w);
  w->filling = g_async_queue_pop (w->free_q);
  *max_clusters = (uint32_t) (w->ring_bytes / w->cluster_size);
  return w->filling->buf;
}

/* Check that clusters [first, first + n) are the next planned ones. */
static bool
check_run (df_qcow2_writer *w, uint64_t first, uint32_t n, GError **err)
{
  for (uint32_t k = 0; k < n; k++)
    if (planned_slot (w, first + k)
        != ((w->next_free + (uint64_t) k * w->cluster_size)
            | DF_QCOW2_OFLAG_COPIED))
      {
        g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                     "cluster %" G_GUINT64_FORMAT " is not the next planned "
                     "data cluster", first + k);
        return false;
      }
  return true;
}

bool
df_qcow2_writer_put_run (df_qcow2_writer *w, uint64_t first, uint32_t n,
                         const void *data, GError **err)
{
  RingSlot *r = w->filling;
  size_t len = (size_t) n * w->cluster_size;

  g_assert (w->started && n > 0);
  g_assert (r != NULL && data == r->buf && len <= w->ring_bytes);
  w->filling = NULL;
  if (!check_write_errno (w, err) || !check_run (w, first, n, err))
    {
      g_async_queue_push (w->free_q, r);
      return false;
    }
  r->len = len;
  r->off = w->next_free;
  g_atomic_int_set (&r->pending, 2);
  g_async_queue_push (w->writer.q, r);
  g_async_queue_push (w->hasher.q, r);  /* hashed in file order */
  w->hashed_to += len;
  w->next_free += len;
  return true;
}

/* ---- copies of a whole df_blk ------------------------------------------ */

/* A sink receives the non-zero units of the source (len < unit only for
 * the last one). */
typedef bool (*SinkFn) (void *sink, uint64_t off, const uint8_t *data,
                        uint32_t len, GError **err);

static int
note_data (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  bool *has_data = opaque;

  if (!(flags & DF_EXTENT_ZERO))
    {
      *has_data = true;
      return -1;
    }
  return 0;
}

static bool
is_zero (const uint8_t *p, size_t len)
{
  return len == 0 || (p[0] == 0 && memcmp (p, p + 1, len - 1) == 0);
}

static bool
range_has_data (df_blk *src, uint64_t pos, uint32_t n, GError **err)
{
  bool has_data = false;
  int e = 0;

  if (df_blk_extents (src, n, pos, note_data, &has_data, &e) < 0)
    return true;   /* unknown: read it */
  return has_data;
}

static bool
copy_chunk (df_blk *src, uint8_t *buf, uint64_t pos, uint32_t n,
            uint32_t unit, SinkFn sink, void *s, GError **err)
{
  int e = 0;

  if (!range_has_data (src, pos, n, err))
    return true;
  if (df_blk_pread (src, buf, n, pos, &e) < 0)
    {
      df_set_error_errno (err, e, "read source at %" G_GUINT64_FORMAT, pos);
      return false;
    }
  for (uint32_t u = 0; u < n; u += unit)
    {
      uint32_t len = MIN (unit, n - u);
      if (!is_zero (buf + u, len) && !sink (s, pos + u, buf + u, len, err))
        return false;
    }
  return true;
}

static bool
copy_blk (df_blk *src, uint32_t unit, SinkFn sink, void *s,
          df_progress_cb progress, void *opaque, GError **err)
{
  g_autofree uint8_t *buf = g_malloc (COPY_CHUNK);

  for (uint64_t pos = 0; pos < src->size;)
    {
      uint32_t n = (uint32_t) MIN ((uint64_t) COPY_CHUNK, src->size - pos);
      if (!copy_chunk (src, buf, pos, n, unit, sink, s, err))
        return false;
      pos += n;
      if (progress != NULL)
        progress (opaque, pos, src->size);
      if (!df_interrupt_check (err))
        return false;
    }
  return true;
}

typedef struct {
  df_qcow2_writer *w;
  uint8_t *pad;             /* one cluster, for the short last one */
} QcowSink;

static bool
qcow2_sink (void *s, uint64_t off, const uint8_t *data, uint32_t len,
            GError **err)
{
  QcowSink *q = s;

  if (len < q->w->cluster_size)
    {
      memset (q->pad, 0, q->w->cluster_size);
      memcpy (q->pad, data, len);
      data = q->pad;
    }
  return df_qcow2_writer_put (q->w, off >> q->w->cluster_bits, data, err);
}

static bool
raw_sink (void *s, uint64_t off, const uint8_t *data, uint32_t len,
          GError **err)
{
  int fd = *(int *) s;

  if (df_pwrite_all (fd, data, len, off) < 0)
    {
      df_set_error_errno (err, errno, "write");
      return false;
    }
  return true;
}

/* Temp files are "<path>.tmp.<pid>.XXXXXX": a pid that no longer runs
 * marks one left by a kill -9. */
static bool
stale_temp_of (const char *name, const char *prefix)
{
  if (!g_str_has_prefix (name, prefix))
    return false;
  char *end = NULL;
  guint64 pid = g_ascii_strtoull (name + strlen (prefix), &end, 10);
  return end != NULL && end[0] == '.' && strlen (end + 1) == 6 && pid > 0
         && pid <= G_MAXINT && kill ((pid_t) pid, 0) != 0 && errno == ESRCH;
}

/* Remove the temp files of earlier writes of path whose process is gone:
 * only this naming, only dead owners, so a concurrent write is safe. */
static void
sweep_stale_temps (const char *path)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *prefix = g_strdup_printf ("%s.tmp.", base);
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  if (d == NULL)
    return;
  for (const char *f; (f = g_dir_read_name (d)) != NULL;)
    if (stale_temp_of (f, prefix))
      {
        g_autofree char *p = g_build_filename (dir, f, NULL);
        g_info ("removing %s, left by an earlier write that was killed", p);
        unlink (p);
      }
}

/* Make a temp file next to path; refuse when path exists. */
static int
make_temp (const char *path, char **tmp, GError **err)
{
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS, "%s already exists", path);
      return -1;
    }
  sweep_stale_temps (path);
  *tmp = g_strdup_printf ("%s.tmp.%d.XXXXXX", path, (int) getpid ());
  int fd = g_mkstemp_full (*tmp, O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0)
    {
      df_set_error_errno (err, errno, "create %s", *tmp);
      g_clear_pointer (tmp, g_free);
    }
  else if (!df_adopt_owner (fd, *tmp, err))
    {
      close (fd);
      unlink (*tmp);
      g_clear_pointer (tmp, g_free);
      return -1;
    }
  return fd;
}

/* Publish tmp as path without replacing anything (df_store_publish). */
static bool
publish (const char *tmp, const char *path, GError **err)
{
  if (!df_interrupt_check (err))
    {
      unlink (tmp);
      return false;
    }
  return df_store_publish (-1, tmp, path, DF_PUBLISH_NOREPLACE, err);
}

bool
df_qcow2_write_from_blk (df_blk *src, const char *path,
                         df_progress_cb progress, void *opaque, GError **err)
{
  g_autofree char *tmp = NULL;
  int fd = make_temp (path, &tmp, err);

  if (fd < 0)
    return false;
  df_qcow2_writer *w = writer_new_fd (fd, tmp, src->size, 16, NULL, err);
  if (w == NULL)
    {
      unlink (tmp);
      return false;
    }
  df_temp_register (tmp);   /* from the finish until the rename */
  g_autofree uint8_t *pad = g_malloc (w->cluster_size);
  QcowSink q = { .w = w, .pad = pad };
  if (!copy_blk (src, w->cluster_size, qcow2_sink, &q, progress, opaque,
                 err))
    {
      df_temp_unregister (tmp);
      df_qcow2_writer_abort (w);
      return false;
    }
  bool ok = df_qcow2_writer_finish (w, err);
  if (!ok)
    unlink (tmp);
  ok = ok && publish (tmp, path, err);
  df_temp_unregister (tmp);
  return ok;
}

bool
df_raw_write_from_blk (df_blk *src, const char *path,
                       df_progress_cb progress, void *opaque, GError **err)
{
  g_autofree char *tmp = NULL;
  int fd = make_temp (path, &tmp, err);
  bool ok;

  if (fd < 0)
    return false;
  df_temp_register (tmp);
  ok = ftruncate (fd, (off_t) src->size) == 0;
  if (!ok)
    df_set_error_errno (err, errno, "truncate %s", tmp);
  ok = ok && copy_blk (src, 4096, raw_sink, &fd, progress, opaque, err);
  if (ok && fsync (fd) < 0)
    {
      df_set_error_errno (err, errno, "sync %s", tmp);
      ok = false;
    }
  if (close (fd) < 0 && ok)
    {
      df_set_error_errno (err, errno, "close %s", tmp);
      ok = false;
    }
  if (!ok)
    unlink (tmp);
  ok = ok && publish (tmp, path, err);
  df_temp_unregister (tmp);
  return ok;
}
