/* diskfarm: qcow2 v2/v3 reader (header, extensions, L1/L2 tables).
 *
 * Layout reference: qemu docs/interop/qcow2.txt.  The file is untrusted:
 * every field is checked against the file size and the spec's ranges before
 * use, and each failure names the field.  The result is the layer's run list
 * (see qcow2.h); refcounts are not needed to read and are not loaded. */
#include "config.h"
#include "common.h"
#include "qcow2.h"

#include "byteorder.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>

typedef struct {
  const char *path;         /* borrowed, for messages */
  uint64_t file_size;
  uint32_t version;
  uint32_t cluster_bits;
  uint32_t cluster_size;
  uint64_t backing_offset;
  uint32_t backing_size;
  uint64_t size;
  uint32_t crypt_method;
  uint32_t l1_size;
  uint64_t l1_offset;
  uint64_t refcount_offset;
  uint32_t refcount_clusters;
  uint32_t nb_snapshots;
  uint64_t snapshots_offset;
  uint64_t incompatible;
  uint32_t refcount_order;
  uint32_t header_length;
  uint8_t compression_type;
} Qcow2Header;


static bool G_GNUC_PRINTF (4, 5)
fail (GError **err, DfErrorCode code, const char *path, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error (err, DF_ERROR, code, "%s: %s %s", path,
               code == DF_ERROR_CORRUPT ? "corrupt qcow2:" : "qcow2:", msg);
  return false;
}

#define CORRUPT(h, ...) fail (err, DF_ERROR_CORRUPT, (h)->path, __VA_ARGS__)
#define UNSUPPORTED(h, ...) \
  fail (err, DF_ERROR_UNSUPPORTED, (h)->path, __VA_ARGS__)

static bool
read_at (int fd, const char *path, void *buf, size_t len, uint64_t off,
         GError **err)
{
  if (df_pread_zfill (fd, buf, len, off) == 0)
    return true;
  df_set_error_errno (err, errno, "read %s at %" G_GUINT64_FORMAT, path, off);
  return false;
}

/* An offset field must be cluster aligned and [off, off+len) inside the
 * file, past the header cluster. */
static bool
check_region (const Qcow2Header *h, const char *field, uint64_t off,
              uint64_t len, GError **err)
{
  if (off % h->cluster_size != 0)
    return CORRUPT (h, "%s 0x%" G_GINT64_MODIFIER "x not cluster aligned",
                    field, off);
  if (off < h->cluster_size)
    return CORRUPT (h, "%s 0x%" G_GINT64_MODIFIER "x points into the header",
                    field, off);
  if (off > h->file_size || len > h->file_size - off)
    return CORRUPT (h, "%s 0x%" G_GINT64_MODIFIER "x + %" G_GUINT64_FORMAT
                    " past end of file (%" G_GUINT64_FORMAT " bytes)", field,
                    off, len, h->file_size);
  return true;
}

/* ---- header --------------------------------------------------------- */

static void
decode_header (const uint8_t *p, Qcow2Header *h)
{
  h->version = df_get_be32 (p + 4);
  h->backing_offset = df_get_be64 (p + 8);
  h->backing_size = df_get_be32 (p + 16);
  h->cluster_bits = df_get_be32 (p + 20);
  h->size = df_get_be64 (p + 24);
  h->crypt_method = df_get_be32 (p + 32);
  h->l1_size = df_get_be32 (p + 36);
  h->l1_offset = df_get_be64 (p + 40);
  h->refcount_offset = df_get_be64 (p + 48);
  h->refcount_clusters = df_get_be32 (p + 56);
  h->nb_snapshots = df_get_be32 (p + 60);
  h->snapshots_offset = df_get_be64 (p + 64);
  if (h->version >= 3)
    {
      h->incompatible = df_get_be64 (p + 72);
      h->refcount_order = df_get_be32 (p + 96);
      h->header_length = df_get_be32 (p + 100);
    }
  else
    {
      h->incompatible = 0;
      h->refcount_order = 4;
      h->header_length = 72;
    }
}

static bool
check_features (const Qcow2Header *h, GError **err)
{
  uint64_t known = DF_QCOW2_INCOMPAT_DIRTY | DF_QCOW2_INCOMPAT_CORRUPT
    | DF_QCOW2_INCOMPAT_DATA_FILE | DF_QCOW2_INCOMPAT_COMPRESSION
    | DF_QCOW2_INCOMPAT_EXTL2;

  if (h->crypt_method != 0)
    return UNSUPPORTED (h, "encrypted images are not supported "
                        "(crypt_method %u)", h->crypt_method);
  if (h->incompatible & ~known)
    return UNSUPPORTED (h, "unknown incompatible features 0x%"
                        G_GINT64_MODIFIER "x", h->incompatible & ~known);
  if (h->incompatible & DF_QCOW2_INCOMPAT_DATA_FILE)
    return UNSUPPORTED (h, "external data files are not supported");
  if (h->incompatible & DF_QCOW2_INCOMPAT_EXTL2)
    return UNSUPPORTED (h, "extended L2 entries are not supported");
  if (h->incompatible & DF_QCOW2_INCOMPAT_CORRUPT)
    return CORRUPT (h, "image is marked corrupt (incompatible bit 1)");
  if ((h->incompatible & DF_QCOW2_INCOMPAT_COMPRESSION)
      && h->compression_type != 0)
    return UNSUPPORTED (h, "compression type %u is not supported "
                        "(only zlib)", h->compression_type);
  return true;
}

static bool
check_header_basics (const Qcow2Header *h, GError **err)
{
  if (h->version != 2 && h->version != 3)
    return UNSUPPORTED (h, "version %u is not supported", h->version);
  if (h->cluster_bits < 9 || h->cluster_bits > 21)
    return CORRUPT (h, "cluster_bits %u out of range 9..21", h->cluster_bits);
  if (h->version >= 3
      && (h->header_length < 104 || h->header_length % 8 != 0
          || h->header_length > (1u << h->cluster_bits)))
    return CORRUPT (h, "header_length %u invalid", h->header_length);
  if (h->refcount_order > 6)
    return CORRUPT (h, "refcount_order %u out of range 0..6",
                    h->refcount_order);
  if (h->size > DF_QCOW2_MAX_VIRTUAL_SIZE)
    return CORRUPT (h, "size %" G_GUINT64_FORMAT " too large", h->size);
  return true;
}

static bool
check_l1_header (const Qcow2Header *h, GError **err)
{
  uint64_t l2_cover = (uint64_t) h->cluster_size * (h->cluster_size / 8);
  uint64_t need = (h->size + l2_cover - 1) / l2_cover;

  if ((uint64_t) h->l1_size * 8 > DF_QCOW2_MAX_L1_BYTES)
    return CORRUPT (h, "l1_size %u too large", h->l1_size);
  if (h->l1_size < need)
    return CORRUPT (h, "l1_size %u too small for virtual size %"
                    G_GUINT64_FORMAT " (needs %" G_GUINT64_FORMAT ")",
                    h->l1_size, h->size, need);
  if (h->l1_size == 0)
    return true;
  return check_region (h, "l1_table_offset", h->l1_offset,
                       (uint64_t) h->l1_size * 8, err);
}

static bool
check_other_tables (const Qcow2Header *h, GError **err)
{
  if (h->refcount_clusters == 0
      || (uint64_t) h->refcount_clusters * h->cluster_size > (8u << 20))
    return CORRUPT (h, "refcount_table_clusters %u out of range",
                    h->refcount_clusters);
  if (!check_region (h, "refcount_table_offset", h->refcount_offset,
                     (uint64_t) h->refcount_clusters * h->cluster_size, err))
    return false;
  if (h->nb_snapshots > 65536)
    return CORRUPT (h, "nb_snapshots %u too large", h->nb_snapshots);
  if (h->nb_snapshots > 0
      && !check_region (h, "snapshots_offset", h->snapshots_offset, 1, err))
    return false;
  return true;
}

/* ---- header extensions and backing name ------------------------------ */

static bool
parse_backing_fmt (const Qcow2Header *h, const uint8_t *p, uint32_t len,
                   char **backing_fmt, GError **err)
{
  if (len == 0 || len > 16 || memchr (p, 0, len) != NULL)
    return CORRUPT (h, "backing format extension of length %u invalid", len);
  g_free (*backing_fmt);
  *backing_fmt = g_strndup ((const char *) p, len);
  if (strcmp (*backing_fmt, "raw") != 0 && strcmp (*backing_fmt, "qcow2") != 0)
    return UNSUPPORTED (h, "backing format '%s' is not supported",
                        *backing_fmt);
  return true;
}

/* Walk extensions in hdr[start, end). */
static bool
parse_extensions (const Qcow2Header *h, const uint8_t *hdr, uint64_t start,
                  uint64_t end, char **backing_fmt, GError **err)
{
  uint64_t pos = start;

  while (end - pos >= 8)
    {
      uint32_t type = df_get_be32 (hdr + pos);
      uint32_t len = df_get_be32 (hdr + pos + 4);
      pos += 8;
      if (type == DF_QCOW2_EXT_END)
        return true;
      if (len > end - pos)
        return CORRUPT (h, "header extension 0x%08x length %u past end of "
                        "header", type, len);
      if (type == DF_QCOW2_EXT_BACKING_FMT
          && !parse_backing_fmt (h, hdr + pos, len, backing_fmt, err))
        return false;
      if (type == DF_QCOW2_EXT_CRYPTO)
        return UNSUPPORTED (h, "encrypted images are not supported");
      if (type == DF_QCOW2_EXT_DATA_FILE)
        return UNSUPPORTED (h, "external data files are not supported");
      pos += ((uint64_t) len + 7) & ~7ULL;
      if (pos > end)
        return true;     /* padding of the last one may be cut: harmless */
    }
  return true;
}

static bool
parse_backing_name (const Qcow2Header *h, const uint8_t *hdr, char **backing,
                    GError **err)
{
  if (h->backing_offset == 0 && h->backing_size == 0)
    return true;
  if (h->backing_size > DF_QCOW2_MAX_BACKING_NAME)
    return CORRUPT (h, "backing_file_size %u exceeds %d", h->backing_size,
                    DF_QCOW2_MAX_BACKING_NAME);
  if (h->backing_size == 0)
    return true;
  if (h->backing_offset < h->header_length
      || h->backing_offset > h->cluster_size
      || h->backing_size > h->cluster_size - h->backing_offset
      || h->backing_offset + h->backing_size > h->file_size)
    return CORRUPT (h, "backing_file_offset %" G_GUINT64_FORMAT
                    " invalid", h->backing_offset);
  if (memchr (hdr + h->backing_offset, 0, h->backing_size) != NULL)
    return CORRUPT (h, "backing file name contains a NUL byte");
  *backing = g_strndup ((const char *) hdr + h->backing_offset,
                        h->backing_size);
  return true;
}

static bool
load_header (int fd, Qcow2Header *h, char **backing, char **backing_fmt,
             GError **err)
{
  uint8_t fixed[112] = { 0 };

  if (h->file_size < 72)
    return CORRUPT (h, "file too small for a header (%" G_GUINT64_FORMAT
                    " bytes)", h->file_size);
  if (!read_at (fd, h->path, fixed, sizeof fixed, 0, err))
    return false;
  if (df_get_be32 (fixed) != DF_QCOW2_MAGIC)
    return CORRUPT (h, "bad magic");
  decode_header (fixed, h);
  if (h->version >= 3 && h->file_size < 104)
    return CORRUPT (h, "file too small for a version 3 header");
  if (!check_header_basics (h, err))
    return false;
  h->cluster_size = 1u << h->cluster_bits;
  h->compression_type = h->header_length > 104 ? fixed[104] : 0;
  if (!check_features (h, err) || !check_l1_header (h, err)
      || !check_other_tables (h, err))
    return false;

  g_autofree uint8_t *hdr = g_malloc0 (h->cluster_size);
  if (!read_at (fd, h->path, hdr, h->cluster_size, 0, err))
    return false;
  if (!parse_backing_name (h, hdr, backing, err))
    return false;
  uint64_t ext_end = *backing != NULL ? h->backing_offset : h->cluster_size;
  return parse_extensions (h, hdr, h->header_length, ext_end, backing_fmt,
                           err);
}

/* ---- L1 / L2 walk ----------------------------------------------------- */

typedef struct {
  uint64_t start, end;
} Range;

typedef struct {
  const Qcow2Header *h;
  GArray *runs;
  uint16_t file;
  GArray *meta;             /* Range, sorted: header, L1, refcount, L2s */
} MapCtx;

static gint
range_cmp (gconstpointer a, gconstpointer b)
{
  const Range *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

static void
meta_add (MapCtx *c, uint64_t start, uint64_t len)
{
  Range r = { start, start + len };
  g_array_append_val (c->meta, r);
}

/* Does [host, host + len) overlap a metadata range? */
static bool
hits_metadata (const MapCtx *c, uint64_t host, uint64_t len)
{
  const Range *m = (const Range *) c->meta->data;
  guint lo = 0, hi = c->meta->len;

  while (lo < hi)       /* first range starting at or after host + len */
    {
      guint mid = lo + (hi - lo) / 2;
      if (m[mid].start < host + len)
        lo = mid + 1;
      else
        hi = mid;
    }
  return lo > 0 && m[lo - 1].end > host;
}

static void
add_run (MapCtx *c, DfRunKind kind, uint64_t guest, uint64_t len,
         uint64_t host, uint32_t csize)
{
  DfRun r = { .guest = guest, .length = len, .host = host, .csize = csize,
              .cluster = c->h->cluster_size, .file = c->file,
              .kind = (uint8_t) kind };
  df_runs_append (c->runs, &r);
}

static bool
map_compressed (MapCtx *c, uint64_t e, uint64_t guest, uint64_t len,
                GError **err)
{
  const Qcow2Header *h = c->h;
  unsigned x = 62 - (h->cluster_bits - 8);
  uint64_t host = e & ((1ULL << x) - 1);
  uint64_t nsec = (e & ~DF_QCOW2_OFLAG_COPIED & ~DF_QCOW2_OFLAG_COMPRESSED)
                  >> x;
  uint64_t csize = (nsec + 1) * 512 - (host & 511);

  if (e & DF_QCOW2_OFLAG_COPIED)
    return CORRUPT (h, "compressed L2 entry for guest offset %"
                    G_GUINT64_FORMAT " has the copied flag", guest);
  if (host < h->cluster_size || host >= h->file_size)
    return CORRUPT (h, "compressed L2 entry for guest offset %"
                    G_GUINT64_FORMAT " points outside the file (0x%"
                    G_GINT64_MODIFIER "x)", guest, host);
  if (csize > h->file_size - host)
    csize = h->file_size - host;   /* last sector may run past EOF */
  if (hits_metadata (c, host, csize))
    return CORRUPT (h, "compressed L2 entry for guest offset %"
                    G_GUINT64_FORMAT " points into metadata (0x%"
                    G_GINT64_MODIFIER "x)", guest, host);
  add_run (c, DF_RUN_COMPRESSED, guest, len, host, (uint32_t) csize);
  return true;
}

static bool
map_l2_entry (MapCtx *c, uint64_t e, uint64_t guest, uint64_t len,
              GError **err)
{
  const Qcow2Header *h = c->h;

  if (e & DF_QCOW2_OFLAG_COMPRESSED)
    return map_compressed (c, e, guest, len, err);
  if (e & DF_QCOW2_L2_RESERVED)
    return CORRUPT (h, "L2 entry for guest offset %" G_GUINT64_FORMAT
                    " has reserved bits set (0x%016" G_GINT64_MODIFIER "x)",
                    guest, e);
  uint64_t host = e & DF_QCOW2_OFFSET_MASK;
  if ((e & DF_QCOW2_OFLAG_ZERO) && h->version < 3)
    return CORRUPT (h, "L2 entry for guest offset %" G_GUINT64_FORMAT
                    " has the zero flag in a version 2 image", guest);
  if (host != 0)
    {
      if (host % h->cluster_size != 0)
        return CORRUPT (h, "L2 entry for guest offset %" G_GUINT64_FORMAT
                        " not cluster aligned (0x%" G_GINT64_MODIFIER "x)",
                        guest, host);
      if (host < h->cluster_size)
        return CORRUPT (h, "L2 entry for guest offset %" G_GUINT64_FORMAT
                        " points into the header", guest);
      if (host >= h->file_size)
        return CORRUPT (h, "L2 entry for guest offset %" G_GUINT64_FORMAT
                        " points past end of file (0x%" G_GINT64_MODIFIER
                        "x)", guest, host);
      if (hits_metadata (c, host, h->cluster_size))
        return CORRUPT (h, "L2 entry for guest offset %" G_GUINT64_FORMAT
                        " points into metadata (0x%" G_GINT64_MODIFIER "x)",
                        guest, host);
    }
  if (e & DF_QCOW2_OFLAG_ZERO)
    add_run (c, DF_RUN_ZERO, guest, len, 0, 0);
  else if (host == 0)
    add_run (c, DF_RUN_UNALLOC, guest, len, 0, 0);
  else
    add_run (c, DF_RUN_DATA, guest, len, host, 0);
  return true;
}

static bool
map_l2 (int fd, MapCtx *c, uint64_t l2_off, uint64_t guest0, uint8_t *buf,
        GError **err)
{
  const Qcow2Header *h = c->h;
  uint32_t n = h->cluster_size / 8;

  if (!read_at (fd, h->path, buf, h->cluster_size, l2_off, err))
    return false;
  for (uint32_t i = 0; i < n; i++)
    {
      uint64_t guest = guest0 + (uint64_t) i * h->cluster_size;
      if (guest >= h->size)
        break;
      uint64_t len = MIN (h->cluster_size, h->size - guest);
      if (!map_l2_entry (c, df_get_be64 (buf + (size_t) i * 8), guest, len, err))
        return false;
    }
  return true;
}

/* Check L1 entry idx and record its L2 table as metadata. */
static bool
check_l1_entry (MapCtx *c, uint32_t idx, uint64_t e, GError **err)
{
  const Qcow2Header *h = c->h;
  uint64_t l2_off = e & DF_QCOW2_OFFSET_MASK;

  if (e & DF_QCOW2_L1_RESERVED)
    return CORRUPT (h, "L1 entry %u has reserved bits set (0x%016"
                    G_GINT64_MODIFIER "x)", idx, e);
  if (l2_off == 0)
    return true;
  g_autofree char *field = g_strdup_printf ("L1 entry %u (L2 table)", idx);
  if (!check_region (h, field, l2_off, h->cluster_size, err))
    return false;
  meta_add (c, l2_off, h->cluster_size);
  return true;
}

static bool
map_l1_entry (int fd, MapCtx *c, uint32_t idx, uint64_t e, uint8_t *buf,
              GError **err)
{
  const Qcow2Header *h = c->h;
  uint64_t cover = (uint64_t) h->cluster_size * (h->cluster_size / 8);
  uint64_t guest0 = (uint64_t) idx * cover;
  uint64_t l2_off = e & DF_QCOW2_OFFSET_MASK;

  if (l2_off == 0)
    {
      add_run (c, DF_RUN_UNALLOC, guest0, MIN (cover, h->size - guest0), 0, 0);
      return true;
    }
  return map_l2 (fd, c, l2_off, guest0, buf, err);
}

/* Tables may not overlap; two L1 entries sharing one L2 table would also
 * multiply the work and the map size of a small file. */
static bool
check_meta_overlap (const MapCtx *c, GError **err)
{
  const Range *m = (const Range *) c->meta->data;

  for (guint i = 1; i < c->meta->len; i++)
    if (m[i].start < m[i - 1].end)
      return CORRUPT (c->h, "metadata tables overlap at 0x%"
                      G_GINT64_MODIFIER "x (shared or misplaced L2 table?)",
                      m[i].start);
  return true;
}

static bool
map_walk (int fd, MapCtx *c, const uint8_t *l1, uint32_t need, GError **err)
{
  const Qcow2Header *h = c->h;
  g_autofree uint8_t *buf = g_malloc (h->cluster_size);

  meta_add (c, 0, h->cluster_size);
  meta_add (c, h->l1_offset, (uint64_t) h->l1_size * 8);
  meta_add (c, h->refcount_offset,
            (uint64_t) h->refcount_clusters * h->cluster_size);
  for (uint32_t i = 0; i < need; i++)
    if (!check_l1_entry (c, i, df_get_be64 (l1 + (size_t) i * 8), err))
      return false;
  g_array_sort (c->meta, range_cmp);
  if (!check_meta_overlap (c, err))
    return false;
  for (uint32_t i = 0; i < need; i++)
    if (!map_l1_entry (fd, c, i, df_get_be64 (l1 + (size_t) i * 8), buf, err))
      return false;
  return true;
}

static bool
map_tables (int fd, const Qcow2Header *h, uint16_t file, GArray *runs,
            GError **err)
{
  uint64_t cover = (uint64_t) h->cluster_size * (h->cluster_size / 8);
  uint32_t need = (uint32_t) ((h->size + cover - 1) / cover);
  g_autoptr (GArray) meta = g_array_new (FALSE, FALSE, sizeof (Range));
  MapCtx c = { .h = h, .runs = runs, .file = file, .meta = meta };

  if (need == 0)
    return true;
  g_autofree uint8_t *l1 = g_malloc ((size_t) need * 8);
  if (!read_at (fd, h->path, l1, (size_t) need * 8, h->l1_offset, err))
    return false;
  return map_walk (fd, &c, l1, need, err);
}

bool
df_qcow2_map (int fd, DfChainLayer *layer, uint16_t file, char **backing_fmt,
              GArray *runs, GError **err)
{
  Qcow2Header h = { .path = layer->path, .file_size = layer->file_size };
  g_autofree char *backing = NULL;

  if (!load_header (fd, &h, &backing, backing_fmt, err))
    return false;
  layer->format = DF_FMT_QCOW2;
  layer->virtual_size = h.size;
  layer->cluster_size = h.cluster_size;
  layer->qcow2_version = h.version;
  if (!map_tables (fd, &h, file, runs, err))
    return false;
  layer->backing = g_steal_pointer (&backing);
  return true;
}

/* One raw-deflate stream per thread, reset for each cluster: zlib's state
 * and window are allocated once per thread, not per read. */
static void
inflate_stream_free (gpointer p)
{
  inflateEnd (p);
  g_free (p);
}

static GPrivate inflate_key = G_PRIVATE_INIT (inflate_stream_free);

static z_stream *
inflate_stream (void)
{
  z_stream *z = g_private_get (&inflate_key);

  if (z != NULL)
    return inflateReset (z) == Z_OK ? z : NULL;
  z = g_new0 (z_stream, 1);
  if (inflateInit2 (z, -12) != Z_OK)
    {
      g_free (z);
      return NULL;
    }
  g_private_set (&inflate_key, z);
  return z;
}

bool
df_qcow2_inflate (const void *in, size_t in_len, void *out, size_t out_len)
{
  z_stream *z = inflate_stream ();
  int ret;

  if (z == NULL)
    return false;
  z->next_in = (Bytef *) in;
  z->avail_in = (uInt) in_len;
  z->next_out = out;
  z->avail_out = (uInt) out_len;
  ret = inflate (z, Z_FINISH);
  return (ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z->avail_out == 0;
}
