/* diskfarm: a backing chain opened and flattened into one extent map.
 *
 * Opening walks the chain top to base.  Each layer (raw.c, qcow2.c)
 * describes itself as a sorted run list covering its virtual size; the
 * layers are overlaid one by one: an UNALLOC run of the map so far is
 * replaced by what the next layer holds there.  What is still UNALLOC at the
 * end (or beyond a smaller backing file) reads as zeros.  Adjacent runs are
 * merged, so the map is proportional to the number of distinct runs, never
 * to the disk size, and a read is one binary search plus one pread(2) per
 * run touched, whatever the chain depth.
 *
 * The map and fds are immutable after open; only the one-cluster inflate
 * cache is shared and it has its own lock. */
#include "config.h"
#include "common.h"
#include "qcow2.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DF_CHAIN_MAX_DEPTH 256

typedef struct {
  df_blk blk;
  DfChainLayer *layers;     /* owned, n_layers */
  int *fds;                 /* owned, one per layer */
  guint n_layers;
  DfRun *runs;              /* owned, sorted by guest, gap-free */
  gsize n_runs;
  GMutex zlock;             /* protects the z_* cache */
  bool z_valid;
  uint16_t z_file;
  uint64_t z_host;
  uint8_t *z_buf;           /* owned, one inflated cluster */
  size_t z_cap;             /* bytes allocated at z_buf */
} Chain;

/* A thread's buffers for reading compressed clusters, kept across reads
 * (and traded with the chain's z_buf), so that once they are large
 * enough a read allocates nothing. */
typedef struct {
  uint8_t *cbuf, *out;
  size_t ccap, ocap;
} ZScratch;

static void
zscratch_free (gpointer p)
{
  ZScratch *z = p;

  g_free (z->cbuf);
  g_free (z->out);
  g_free (z);
}

static GPrivate zscratch_key = G_PRIVATE_INIT (zscratch_free);

/* This thread's scratch with cbuf >= csize and out >= cluster bytes. */
static ZScratch *
zscratch_get (size_t csize, size_t cluster)
{
  ZScratch *z = g_private_get (&zscratch_key);

  if (z == NULL)
    {
      z = g_new0 (ZScratch, 1);
      g_private_set (&zscratch_key, z);
    }
  if (z->ccap < csize)
    {
      g_free (z->cbuf);
      z->cbuf = g_malloc (csize);
      z->ccap = csize;
    }
  if (z->ocap < cluster)
    {
      g_free (z->out);
      z->out = g_malloc (cluster);
      z->ocap = cluster;
    }
  return z;
}

static const df_blk_ops chain_ops;

/* ---- run lists -------------------------------------------------------- */

static bool
runs_continue (const DfRun *a, const DfRun *b)
{
  if (a->kind != b->kind || a->guest + a->length != b->guest)
    return false;
  switch ((DfRunKind) a->kind)
    {
    case DF_RUN_UNALLOC:
    case DF_RUN_ZERO:
      return true;
    case DF_RUN_DATA:
      return a->file == b->file && a->host + a->length == b->host;
    case DF_RUN_COMPRESSED:
      break;
    }
  return false;
}

void
df_runs_append (GArray *runs, const DfRun *r)
{
  if (r->length == 0)
    return;
  if (runs->len > 0)
    {
      DfRun *last = &g_array_index (runs, DfRun, runs->len - 1);
      g_assert (last->guest + last->length == r->guest);
      if (runs_continue (last, r))
        {
          last->length += r->length;
          return;
        }
    }
  g_array_append_val (runs, *r);
}

/* Index of the run holding guest offset off (runs cover it). */
static gsize
runs_find (const DfRun *runs, gsize n, uint64_t off)
{
  gsize lo = 0, hi = n;

  while (hi - lo > 1)
    {
      gsize mid = lo + (hi - lo) / 2;
      if (runs[mid].guest <= off)
        lo = mid;
      else
        hi = mid;
    }
  return lo;
}

/* Append the part [a, b) of lower run l to out. */
static void
overlay_piece (GArray *out, const DfRun *l, uint64_t a, uint64_t b)
{
  DfRun p = *l;
  uint64_t skip = a - l->guest;

  p.guest = a;
  p.length = b - a;
  if (p.kind == DF_RUN_DATA)
    p.host += skip;
  else if (p.kind == DF_RUN_COMPRESSED)
    p.coff += (uint32_t) skip;
  df_runs_append (out, &p);
}

/* Fill the hole [a, b) of the map from the lower layer's runs (covering
 * [0, lower_size)); *cur is a cursor into lower, only moving forward. */
static void
overlay_hole (GArray *out, const GArray *lower, uint64_t lower_size,
              gsize *cur, uint64_t a, uint64_t b)
{
  const DfRun *lr = (const DfRun *) lower->data;
  uint64_t end = MIN (b, lower_size);

  if (lower->len > 0 && a < end)
    {
      if (*cur >= lower->len || lr[*cur].guest > a
          || lr[*cur].guest + lr[*cur].length <= a)
        *cur = runs_find (lr, lower->len, a);
      while (a < end && *cur < lower->len)
        {
          const DfRun *l = &lr[*cur];
          uint64_t e = MIN (end, l->guest + l->length);
          overlay_piece (out, l, a, e);
          a = e;
          if (a == l->guest + l->length)
            (*cur)++;
        }
    }
  if (a < b)
    {
      /* past the end of the lower layer: zeros, and nothing further down
       * shows through (as qemu reads a short backing file) */
      DfRun u = { .guest = a, .length = b - a, .kind = DF_RUN_ZERO };
      df_runs_append (out, &u);
    }
}

/* New map: map with its UNALLOC runs filled from lower.  Frees map. */
static GArray *
overlay (GArray *map, const GArray *lower, uint64_t lower_size)
{
  GArray *out = g_array_sized_new (FALSE, FALSE, sizeof (DfRun), map->len);
  gsize cur = 0;

  for (guint i = 0; i < map->len; i++)
    {
      const DfRun *r = &g_array_index (map, DfRun, i);
      if (r->kind == DF_RUN_UNALLOC)
        overlay_hole (out, lower, lower_size, &cur, r->guest,
                      r->guest + r->length);
      else
        df_runs_append (out, r);
    }
  g_array_unref (map);
  return out;
}

static bool
map_has_holes (const GArray *map)
{
  for (guint i = 0; i < map->len; i++)
    if (g_array_index (map, DfRun, i).kind == DF_RUN_UNALLOC)
      return true;
  return false;
}

/* ---- opening ------------------------------------------------------------ */

typedef struct {
  GArray *layers;     /* DfChainLayer */
  GArray *fds;        /* int */
  GArray *inodes;     /* struct stat (dev, ino) */
  GArray *map;        /* DfRun, NULL before the top layer */
  uint64_t size;
} Builder;

static void
builder_clear (Builder *b)
{
  for (guint i = 0; b->layers != NULL && i < b->layers->len; i++)
    {
      DfChainLayer *l = &g_array_index (b->layers, DfChainLayer, i);
      g_free (l->path);
      g_free (l->backing);
    }
  for (guint i = 0; b->fds != NULL && i < b->fds->len; i++)
    close (g_array_index (b->fds, int, i));
  g_clear_pointer (&b->layers, g_array_unref);
  g_clear_pointer (&b->fds, g_array_unref);
  g_clear_pointer (&b->inodes, g_array_unref);
  g_clear_pointer (&b->map, g_array_unref);
}

static int
open_layer_fd (const char *path, bool top, const char *child, GError **err)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);  /* no FIFO hang */

  if (fd >= 0)
    return fd;
  if (errno == ENOENT && top)
    g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no such file: %s", path);
  else if (errno == ENOENT)
    g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                 "backing file %s of %s not found", path, child);
  else
    df_set_error_errno (err, errno, "open %s", path);
  return -1;
}

/* Keep fd in the builder after checking it is a regular file not already
 * in the chain. */
static bool
builder_add_fd (Builder *b, int fd, const char *path, struct stat *st,
                GError **err)
{
  g_array_append_val (b->fds, fd);
  if (fstat (fd, st) < 0)
    {
      df_set_error_errno (err, errno, "stat %s", path);
      return false;
    }
  if (!S_ISREG (st->st_mode) && !S_ISBLK (st->st_mode))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s: not a regular file", path);
      return false;
    }
  for (guint i = 0; i < b->inodes->len; i++)
    {
      const struct stat *o = &g_array_index (b->inodes, struct stat, i);
      if (o->st_dev == st->st_dev && o->st_ino == st->st_ino)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                       "backing chain loop: %s is already in the chain",
                       path);
          return false;
        }
    }
  g_array_append_val (b->inodes, *st);
  return true;
}

static bool
probe_fd (int fd, const char *path, DfImageFormat *fmt, GError **err)
{
  unsigned char magic[4];

  if (df_pread_zfill (fd, magic, sizeof magic, 0) < 0)
    {
      df_set_error_errno (err, errno, "read %s", path);
      return false;
    }
  *fmt = memcmp (magic, "QFI\xfb", 4) == 0 ? DF_FMT_QCOW2 : DF_FMT_RAW;
  return true;
}

static uint64_t
file_size_of (int fd, const struct stat *st)
{
  if (S_ISBLK (st->st_mode))
    {
      off_t end = lseek (fd, 0, SEEK_END);
      return end > 0 ? (uint64_t) end : 0;
    }
  return (uint64_t) st->st_size;
}

/* Open path as layer number b->layers->len and overlay it; *backing_fmt
 * receives the format its header names for its backing file. */
static bool
builder_add_layer (Builder *b, const char *path, DfImageFormat fmt,
                   char **backing_fmt, GError **err)
{
  guint idx = b->layers->len;
  const char *child = idx > 0
    ? g_array_index (b->layers, DfChainLayer, idx - 1).path : NULL;
  struct stat st;
  int fd = open_layer_fd (path, idx == 0, child, err);

  if (fd < 0 || !builder_add_fd (b, fd, path, &st, err))
    return false;
  DfChainLayer layer = { .path = g_strdup (path),
                         .file_size = file_size_of (fd, &st) };
  g_array_append_val (b->layers, layer);
  DfChainLayer *l = &g_array_index (b->layers, DfChainLayer, idx);
  if (fmt == DF_FMT_UNKNOWN && !probe_fd (fd, path, &fmt, err))
    return false;

  g_autoptr (GArray) runs = g_array_new (FALSE, FALSE, sizeof (DfRun));
  bool ok = fmt == DF_FMT_QCOW2
    ? df_qcow2_map (fd, l, (uint16_t) idx, backing_fmt, runs, err)
    : df_raw_map (fd, l, (uint16_t) idx, runs, err);
  if (!ok)
    return false;
  if (idx == 0)
    {
      b->size = l->virtual_size;
      b->map = g_steal_pointer (&runs);
    }
  else if (map_has_holes (b->map))
    b->map = overlay (b->map, runs, l->virtual_size);
  return true;
}

static char *
resolve_backing (const char *image, const char *name, GError **err)
{
  if (name[0] == '\0' || strstr (name, "://") != NULL
      || g_str_has_prefix (name, "json:"))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                   "%s: backing file '%s' is not a plain file name", image,
                   name);
      return NULL;
    }
  if (g_path_is_absolute (name))
    return g_strdup (name);
  g_autofree char *dir = g_path_get_dirname (image);
  return g_build_filename (dir, name, NULL);
}

static bool
builder_run (Builder *b, const char *path, DfImageFormat format, GError **err)
{
  g_autofree char *cur = g_strdup (path);
  DfImageFormat fmt = format;

  for (;;)
    {
      g_autofree char *backing_fmt = NULL;
      if (b->layers->len >= DF_CHAIN_MAX_DEPTH)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED,
                       "%s: backing chain deeper than %d files", path,
                       DF_CHAIN_MAX_DEPTH);
          return false;
        }
      if (!builder_add_layer (b, cur, fmt, &backing_fmt, err))
        return false;
      const DfChainLayer *l = &g_array_index (b->layers, DfChainLayer,
                                              b->layers->len - 1);
      if (l->backing == NULL)
        return true;
      char *next = resolve_backing (l->path, l->backing, err);
      if (next == NULL)
        return false;
      g_free (cur);
      cur = next;
      fmt = DF_FMT_UNKNOWN;
      if (backing_fmt != NULL)
        df_image_format_parse (backing_fmt, &fmt, NULL);
    }
}

df_blk *
df_chain_open (const char *path, DfImageFormat format, GError **err)
{
  Builder b = {
    .layers = g_array_new (FALSE, FALSE, sizeof (DfChainLayer)),
    .fds = g_array_new (FALSE, FALSE, sizeof (int)),
    .inodes = g_array_new (FALSE, FALSE, sizeof (struct stat)),
  };

  if (!builder_run (&b, path, format, err))
    {
      builder_clear (&b);
      return NULL;
    }
  Chain *c = g_new0 (Chain, 1);
  df_blk_init (&c->blk, &chain_ops, b.size, true);
  c->n_layers = b.layers->len;
  c->layers = (DfChainLayer *) g_array_free (g_steal_pointer (&b.layers),
                                             FALSE);
  c->fds = (int *) g_array_free (g_steal_pointer (&b.fds), FALSE);
  c->n_runs = b.map->len;
  c->runs = (DfRun *) g_array_free (g_steal_pointer (&b.map), FALSE);
  g_mutex_init (&c->zlock);
  builder_clear (&b);
  return &c->blk;
}

/* ---- data path ---------------------------------------------------------- */

/* Copy count bytes at offset in of compressed run r into buf. */
static int
read_compressed (Chain *c, const DfRun *r, void *buf, uint64_t in,
                 uint32_t count, int *err)
{
  uint64_t at = r->coff + in;

  g_mutex_lock (&c->zlock);
  if (c->z_valid && c->z_file == r->file && c->z_host == r->host)
    {
      memcpy (buf, c->z_buf + at, count);
      g_mutex_unlock (&c->zlock);
      return 0;
    }
  g_mutex_unlock (&c->zlock);

  ZScratch *z = zscratch_get (r->csize, r->cluster);
  if (df_pread_zfill (c->fds[r->file], z->cbuf, r->csize, r->host) < 0)
    {
      *err = errno;
      g_warning ("%s: read compressed cluster: %s",
                 c->layers[r->file].path, g_strerror (errno));
      return -1;
    }
  if (!df_qcow2_inflate (z->cbuf, r->csize, z->out, r->cluster))
    {
      *err = EIO;
      g_warning ("%s: corrupt compressed cluster at 0x%" G_GINT64_MODIFIER
                 "x", c->layers[r->file].path, r->host);
      return -1;
    }
  memcpy (buf, z->out + at, count);
  /* the inflated cluster becomes the chain's; its old buffer, this
   * thread's next one */
  g_mutex_lock (&c->zlock);
  uint8_t *old = c->z_buf;
  size_t old_cap = c->z_cap;
  c->z_buf = z->out;
  c->z_cap = z->ocap;
  z->out = old;
  z->ocap = old != NULL ? old_cap : 0;
  c->z_file = r->file;
  c->z_host = r->host;
  c->z_valid = true;
  g_mutex_unlock (&c->zlock);
  return 0;
}

static int
read_run (Chain *c, const DfRun *r, uint8_t *buf, uint64_t in, uint32_t n,
          int *err)
{
  switch ((DfRunKind) r->kind)
    {
    case DF_RUN_UNALLOC:
    case DF_RUN_ZERO:
      memset (buf, 0, n);
      return 0;
    case DF_RUN_DATA:
      if (df_pread_zfill (c->fds[r->file], buf, n, r->host + in) == 0)
        return 0;
      *err = errno;
      g_warning ("%s: read: %s", c->layers[r->file].path, g_strerror (errno));
      return -1;
    case DF_RUN_COMPRESSED:
      return read_compressed (c, r, buf, in, n, err);
    }
  g_assert_not_reached ();
}

static int
chain_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  Chain *c = (Chain *) b;
  uint8_t *p = buf;
  gsize i = runs_find (c->runs, c->n_runs, offset);

  while (count > 0)
    {
      const DfRun *r = &c->runs[i++];
      uint64_t in = offset - r->guest;
      uint32_t n = (uint32_t) MIN ((uint64_t) count, r->length - in);
      if (read_run (c, r, p, in, n, err) < 0)
        return -1;
      p += n;
      offset += n;
      count -= n;
    }
  return 0;
}

/* A DATA run inside its file is sent from it (the files of a chain are
 * never written while it is open); the rest is copied: zeros, compressed
 * clusters, data past the end of a short file (read as zeros). */
static int
chain_span (df_blk *b, uint32_t count, uint64_t offset, df_blk_span *span,
            int *err)
{
  Chain *c = (Chain *) b;
  const DfRun *r = &c->runs[runs_find (c->runs, c->n_runs, offset)];
  uint64_t in = offset - r->guest;
  uint32_t n = (uint32_t) MIN ((uint64_t) count, r->length - in);

  (void) err;
  *span = (df_blk_span) { NULL, -1, 0, n };
  if (r->kind == DF_RUN_DATA
      && r->host + in + n <= c->layers[r->file].file_size)
    {
      span->owner = df_blk_ref (b);
      span->fd = c->fds[r->file];
      span->offset = r->host + in;
    }
  return 0;
}

static uint32_t
run_flags (const DfRun *r)
{
  return r->kind == DF_RUN_DATA || r->kind == DF_RUN_COMPRESSED
    ? 0 : DF_EXTENT_HOLE | DF_EXTENT_ZERO;
}

static int
chain_extents (df_blk *b, uint32_t count, uint64_t offset, df_extent_cb cb,
               void *opaque, int *err)
{
  Chain *c = (Chain *) b;
  uint64_t end = offset + count;
  gsize i = runs_find (c->runs, c->n_runs, offset);
  uint64_t start = offset;
  uint32_t flags = run_flags (&c->runs[i]);

  while (offset < end)
    {
      const DfRun *r = &c->runs[i++];
      uint64_t e = MIN (end, r->guest + r->length);
      if (run_flags (r) != flags)
        {
          if (cb (opaque, start, offset - start, flags) < 0)
            return 0;
          start = offset;
          flags = run_flags (r);
        }
      offset = e;
    }
  cb (opaque, start, end - start, flags);
  return 0;
}

static void
chain_destroy (df_blk *b)
{
  Chain *c = (Chain *) b;

  for (guint i = 0; i < c->n_layers; i++)
    {
      close (c->fds[i]);
      g_free (c->layers[i].path);
      g_free (c->layers[i].backing);
    }
  g_free (c->fds);
  g_free (c->layers);
  g_free (c->runs);
  g_free (c->z_buf);
  g_mutex_clear (&c->zlock);
  g_free (c);
}

static const df_blk_ops chain_ops = {
  .name = "qcow2-chain",
  .pread = chain_pread,
  .extents = chain_extents,
  .span = chain_span,
  .destroy = chain_destroy,
};

const DfChainLayer *
df_chain_layers (df_blk *chain, guint *n_layers)
{
  g_return_val_if_fail (chain != NULL && chain->ops == &chain_ops, NULL);
  Chain *c = (Chain *) chain;
  *n_layers = c->n_layers;
  return c->layers;
}

gsize
df_chain_extent_count (df_blk *chain)
{
  g_return_val_if_fail (chain != NULL && chain->ops == &chain_ops, 0);
  return ((Chain *) chain)->n_runs;
}
