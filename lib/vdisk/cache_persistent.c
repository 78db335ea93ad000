/* diskfarm: server-persistent write-cache store.
 *
 * Files in the device's cache directory:
 *   persistent.data  sparse, nblocks * 4 KiB; block b at offset b * 4096.
 *   persistent.map   a 4096-byte header, then one byte per block:
 *                    0 = BASE (read the base), 1 = CACHED (read
 *                    persistent.data), 2 = ZERO (reads zeros).
 * Header (little-endian): 0 magic "DFPCMAP\n" | 8 u32 version (1) |
 *   12 u32 block size (4096) | 16 u64 virtual size | 24 u64 block count |
 *   32 u32 header size (4096) | 36 u32 CRC-32 (zlib) of bytes 0..35 |
 *   rest zero.
 *
 * Durability: data is written in place at once (page cache); map changes
 * are kept as dirty bits in memory.  FLUSH (and a FUA write) snapshots the
 * dirty entries, fdatasyncs persistent.data, then writes those entries and
 * fdatasyncs persistent.map.  So an entry on disk only ever says CACHED for
 * a block whose data was synced before the entry was written, and entries
 * are single bytes: a torn map write leaves each entry old or new, never a
 * pointer to unsynced data.  Blocks never go back to BASE, so a stale
 * on-disk entry is always an older acknowledged state.  Writes after the
 * last FLUSH may be lost or torn by a crash, as the NBD spec allows.
 *
 * The map file is created as persistent.map.tmp and renamed into place
 * after the data file is sized and synced, so a crash during creation
 * leaves no half-made cache.  The map is flock()ed while open: a second
 * opener gets DF_ERROR_BUSY.  A leased cache (mode.leased, on shared
 * storage) takes no flock: its cache lease is the lock (blk_lease.h).
 *
 * The same store, under the names private.data + private.map, holds the
 * private images of cache_private.c (df_cache_durable_open). */
#include "cache_int.h"
#include "privilege.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define BS    DF_CACHE_BLOCK_SIZE
#define SHIFT DF_CACHE_BLOCK_SHIFT

#define MAP_MAGIC       "DFPCMAP\n"
#define MAP_VERSION     1
#define MAP_HEADER_SIZE 4096u
#define MAP_HEADER_USED 40u

typedef struct {
  int data_fd;                /* owned */
  int map_fd;                 /* owned, flock()ed */
  GMutex flush_lock;          /* serialises flushes */
  gint data_dirty;            /* atomic: data written since last sync */
  bool failed;                /* a sync failed: refuse writes (under lock) */
  uint64_t *dirty;            /* bitmap of map entries to write; c->lock */
  uint64_t dirty_lo, dirty_hi;/* dirty blocks lie in [lo, hi); c->lock */
} pers_store;

/* One run of map entries taken from the dirty bitmap by a flush. */
typedef struct {
  uint64_t start, n;
} map_run;

/* ---- header ------------------------------------------------------------- */

static void
header_encode (uint8_t h[MAP_HEADER_SIZE], uint64_t size, uint64_t nblocks)
{
  uint32_t v32;
  uint64_t v64;

  memset (h, 0, MAP_HEADER_SIZE);
  memcpy (h, MAP_MAGIC, 8);
  v32 = GUINT32_TO_LE (MAP_VERSION), memcpy (h + 8, &v32, 4);
  v32 = GUINT32_TO_LE (BS), memcpy (h + 12, &v32, 4);
  v64 = GUINT64_TO_LE (size), memcpy (h + 16, &v64, 8);
  v64 = GUINT64_TO_LE (nblocks), memcpy (h + 24, &v64, 8);
  v32 = GUINT32_TO_LE (MAP_HEADER_SIZE), memcpy (h + 32, &v32, 4);
  v32 = GUINT32_TO_LE ((uint32_t) crc32 (0, h, 36)), memcpy (h + 36, &v32, 4);
}

static uint32_t
get_le32 (const uint8_t *p)
{
  uint32_t v;
  memcpy (&v, p, 4);
  return GUINT32_FROM_LE (v);
}

static uint64_t
get_le64 (const uint8_t *p)
{
  uint64_t v;
  memcpy (&v, p, 8);
  return GUINT64_FROM_LE (v);
}

static bool
corrupt (GError **err, const char *path, const char *what)
{
  g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT, "persistent cache map %s: %s",
               path, what);
  return false;
}

/* Check a header read from path against this disk. */
static bool
header_check (const uint8_t *h, df_cache *c, const char *path, GError **err)
{
  uint64_t size = get_le64 (h + 16);

  if (memcmp (h, MAP_MAGIC, 8) != 0)
    return corrupt (err, path, "bad magic (not a diskfarm cache map)");
  if (get_le32 (h + 36) != (uint32_t) crc32 (0, h, 36))
    return corrupt (err, path, "header checksum mismatch");
  if (get_le32 (h + 8) != MAP_VERSION)
    return corrupt (err, path, "unsupported map version");
  if (get_le32 (h + 12) != BS || get_le32 (h + 32) != MAP_HEADER_SIZE)
    return corrupt (err, path, "unexpected block or header size");
  if (size != c->blk.size)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "persistent cache map %s was made for a disk of %"
                   G_GUINT64_FORMAT " bytes but the disk now has %"
                   G_GUINT64_FORMAT " bytes; discard the cache (device "
                   "reset --discard)", path, size, c->blk.size);
      return false;
    }
  if (get_le64 (h + 24) != c->nblocks)
    return corrupt (err, path, "block count does not match the virtual size");
  return true;
}

/* ---- creation and loading ---------------------------------------------- */

static int
open_fail (GError **err, const char *what, const char *path)
{
  df_set_error_errno (err, errno, "%s %s", what, path);
  return -1;
}

/* path created empty (or truncated), mode 0600, owned like its
 * directory (df_adopt_owner): the descriptor, or -1 with *err. */
static int
create_owned (const char *path, GError **err)
{
  int fd = open (path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

  if (fd < 0)
    return open_fail (err, "create", path);
  if (!df_adopt_owner (fd, path, err))
    {
      close (fd);
      return -1;
    }
  return fd;
}

/* New, empty data file (all blocks BASE), sized and synced. */
static int
create_data (df_cache *c, const char *path, GError **err)
{
  int fd = create_owned (path, err);

  if (fd < 0)
    return -1;
  if (ftruncate (fd, (off_t) (c->nblocks << SHIFT)) < 0 || fdatasync (fd) < 0)
    {
      open_fail (err, "size", path);
      close (fd);
      return -1;
    }
  return fd;
}

/* New map (header + all BASE) written to path.tmp, synced, renamed. */
static int
create_map (df_cache *c, const char *path, GError **err)
{
  g_autofree char *tmp = g_strconcat (path, DF_CACHE_TMP_SUFFIX, NULL);
  uint8_t h[MAP_HEADER_SIZE];
  off_t total = (off_t) (MAP_HEADER_SIZE + c->nblocks);
  int fd = create_owned (tmp, err);

  if (fd < 0)
    return -1;
  header_encode (h, c->blk.size, c->nblocks);
  if (df_pwrite_all (fd, h, sizeof h, 0) < 0 || ftruncate (fd, total) < 0)
    {
      open_fail (err, "write", tmp);
      close (fd);
      unlink (tmp);
      return -1;
    }
  /* Reserve the map's space now so a flush does not meet ENOSPC on it
   * (best effort: some file systems cannot). */
  (void) posix_fallocate (fd, 0, total);
  if (!df_store_publish (fd, tmp, path, DF_PUBLISH_REPLACE, err))
    {
      close (fd);
      return -1;
    }
  return fd;
}

/* Read and check the map entries into c->state. */
static bool
load_entries (df_cache *c, int fd, const char *path, GError **err)
{
  struct stat st;
  uint8_t h[MAP_HEADER_SIZE];

  if (fstat (fd, &st) < 0)
    return open_fail (err, "stat", path), false;
  if ((uint64_t) st.st_size < MAP_HEADER_SIZE)
    return corrupt (err, path, "file shorter than its header");
  if (df_pread_all (fd, h, sizeof h, 0) < 0)
    return open_fail (err, "read", path), false;
  if (!header_check (h, c, path, err))
    return false;
  if ((uint64_t) st.st_size != MAP_HEADER_SIZE + c->nblocks)
    return corrupt (err, path, "file size does not match the block count");
  if (c->nblocks > 0
      && df_pread_all (fd, c->state, c->nblocks, MAP_HEADER_SIZE) < 0)
    return open_fail (err, "read", path), false;
  for (uint64_t b = 0; b < c->nblocks; b++)
    {
      if (c->state[b] >= DF_CB_N_STATES)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                       "persistent cache map %s: entry of block %"
                       G_GUINT64_FORMAT " has invalid value %u", path, b,
                       c->state[b]);
          return false;
        }
      c->cached_blocks += c->state[b] == DF_CB_CACHED;
    }
  return true;
}

/* Open the existing data file and check its size. */
static int
open_data (df_cache *c, const char *path, GError **err)
{
  struct stat st;
  int fd = open (path, O_RDWR | O_CLOEXEC);

  if (fd < 0 && errno == ENOENT)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "persistent cache %s: map present but data file missing",
                   path);
      return -1;
    }
  if (fd < 0)
    return open_fail (err, "open", path);
  if (fstat (fd, &st) < 0 || (uint64_t) st.st_size != c->nblocks << SHIFT)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "persistent cache %s: data file size does not match "
                   "the disk", path);
      close (fd);
      return -1;
    }
  return fd;
}

/* Give back the space of blocks that are not CACHED (leftovers of writes
 * that were never flushed before a crash). */
static void
reclaim_unmapped (df_cache *c, int fd)
{
  for (uint64_t b = 0; b < c->nblocks;)
    {
      uint64_t n = 0;
      while (b + n < c->nblocks && c->state[b + n] != DF_CB_CACHED)
        n++;
      if (n > 0)
        df_cache_file_punch (c, fd, b << SHIFT, n << SHIFT);
      b += n > 0 ? n : 1;
    }
}

/* ---- store ops ---------------------------------------------------------- */

static int
pers_read (df_cache *c, void *buf, size_t len, uint64_t off, int *err)
{
  pers_store *s = c->store_priv;

  return df_cache_file_read (c, s->data_fd, buf, len, off, err);
}

static bool
pers_failed (df_cache *c)
{
  pers_store *s = c->store_priv;
  bool failed;

  g_mutex_lock (&c->lock);
  failed = s->failed;
  g_mutex_unlock (&c->lock);
  return failed;
}

/* The cache's writer (df_cache_set_writer) may no longer write: the
 * store fails for good.  -1, *err = EIO. */
static int
writer_refused (df_cache *c, int *err)
{
  pers_store *s = c->store_priv;

  g_mutex_lock (&c->lock);
  if (!s->failed)
    g_warning ("cache %s: this server may no longer write it; the cache is "
               "now failed (writes and flushes get EIO)", c->dir);
  s->failed = true;
  g_mutex_unlock (&c->lock);
  *err = EIO;
  return -1;
}

static int
pers_write (df_cache *c, const void *buf, uint64_t blk, uint64_t n, int *err)
{
  pers_store *s = c->store_priv;
  gint64 t0;
  int r;

  if (pers_failed (c))
    {
      *err = EIO;
      return -1;
    }
  if (!df_cache_may_write (c, &t0))
    return writer_refused (c, err);
  r = df_cache_file_write (c, s->data_fd, buf, n << SHIFT, blk << SHIFT, err);
  df_cache_wrote (c, "data", t0);
  if (r == -1)
    return -1;
  g_atomic_int_set (&s->data_dirty, 1);
  return 0;
}

static void
pers_discard (df_cache *c, uint64_t blk, uint64_t n)
{
  pers_store *s = c->store_priv;
  gint64 t0;

  if (!df_cache_may_write (c, &t0))
    return; /* advisory: only space */
  df_cache_file_punch (c, s->data_fd, blk << SHIFT, n << SHIFT);
  df_cache_wrote (c, "hole", t0);
}

static void
pers_changed (df_cache *c, uint64_t blk)
{
  pers_store *s = c->store_priv;

  s->dirty[blk / 64] |= G_GUINT64_CONSTANT (1) << (blk % 64);
  if (s->dirty_lo >= s->dirty_hi)
    s->dirty_lo = blk, s->dirty_hi = blk + 1;
  else
    s->dirty_lo = MIN (s->dirty_lo, blk), s->dirty_hi = MAX (s->dirty_hi,
                                                             blk + 1);
}

static bool
dirty_test_clear (pers_store *s, uint64_t b)
{
  uint64_t bit = G_GUINT64_CONSTANT (1) << (b % 64);
  bool set = (s->dirty[b / 64] & bit) != 0;

  s->dirty[b / 64] &= ~bit;
  return set;
}

/* Take the dirty entries (c->lock held): runs + their current values. */
static void
snapshot_dirty (df_cache *c, GArray *runs, GByteArray *values)
{
  pers_store *s = c->store_priv;

  for (uint64_t b = s->dirty_lo; b < s->dirty_hi; b++)
    {
      if (b % 64 == 0 && s->dirty[b / 64] == 0)
        {
          b += 63;
          continue;
        }
      if (!dirty_test_clear (s, b))
        continue;
      map_run *last = runs->len ? &g_array_index (runs, map_run,
                                                  runs->len - 1) : NULL;
      if (last != NULL && last->start + last->n == b)
        last->n++;
      else
        g_array_append_val (runs, ((map_run) { b, 1 }));
      g_byte_array_append (values, &c->state[b], 1);
    }
  s->dirty_lo = s->dirty_hi = 0;
}

static int
sync_fail (df_cache *c, const char *what, int *err)
{
  pers_store *s = c->store_priv;
  int e = errno;

  g_warning ("cache %s: %s: %s; the persistent cache is now failed (writes "
             "and flushes get EIO)", c->dir, what, g_strerror (e));
  g_mutex_lock (&c->lock);
  s->failed = true;
  g_mutex_unlock (&c->lock);
  *err = EIO;
  return -1;
}

/* Write the snapshotted entries and sync the map. */
static int
write_entries (df_cache *c, GArray *runs, GByteArray *values, int *err)
{
  pers_store *s = c->store_priv;
  const uint8_t *v = values->data;
  gint64 t0;

  if (runs->len > 0 && !df_cache_may_write (c, &t0))
    return writer_refused (c, err);
  for (guint i = 0; i < runs->len; i++)
    {
      map_run *r = &g_array_index (runs, map_run, i);
      int rc = df_pwrite_all (s->map_fd, v, r->n, MAP_HEADER_SIZE + r->start);
      if (rc < 0)
        return sync_fail (c, "write map", err);
      v += r->n;
    }
  if (runs->len > 0)
    df_cache_wrote (c, "map", t0);
  if (runs->len > 0 && fdatasync (s->map_fd) < 0)
    return sync_fail (c, "fdatasync map", err);
  return 0;
}

/* Test hook (a slow disk): DISKFARM_FAULT_FLUSH_DELAY_MS=<ms> delays
 * every flush before its first sync. */
static void
fault_flush_delay (void)
{
  static gsize once = 0;
  static gint64 delay_us;

  if (g_once_init_enter (&once))
    {
      const char *v = g_getenv ("DISKFARM_FAULT_FLUSH_DELAY_MS");
      delay_us = v != NULL ? g_ascii_strtoll (v, NULL, 10) * 1000 : 0;
      g_once_init_leave (&once, 1);
    }
  if (delay_us > 0)
    g_usleep (delay_us);
}

static int
pers_flush_locked (df_cache *c, int *err)
{
  pers_store *s = c->store_priv;
  g_autoptr (GArray) runs = g_array_new (FALSE, FALSE, sizeof (map_run));
  g_autoptr (GByteArray) values = g_byte_array_new ();

  g_mutex_lock (&c->lock);
  if (s->failed)
    {
      g_mutex_unlock (&c->lock);
      *err = EIO;
      return -1;
    }
  snapshot_dirty (c, runs, values);
  g_mutex_unlock (&c->lock);

  fault_flush_delay ();
  /* Every CACHED entry in the snapshot had its data written (and
   * data_dirty set) before it was flipped: sync that data first. */
  if (g_atomic_int_exchange (&s->data_dirty, 0) && fdatasync (s->data_fd) < 0)
    return sync_fail (c, "fdatasync data", err);
  return write_entries (c, runs, values, err);
}

static int
pers_flush (df_cache *c, int *err)
{
  pers_store *s = c->store_priv;
  int ret;

  g_mutex_lock (&s->flush_lock);
  ret = pers_flush_locked (c, err);
  g_mutex_unlock (&s->flush_lock);
  return ret;
}

static void
pers_free (pers_store *s)
{
  if (s->data_fd >= 0)
    close (s->data_fd);
  if (s->map_fd >= 0)
    close (s->map_fd);
  g_mutex_clear (&s->flush_lock);
  g_free (s->dirty);
  g_free (s);
}

static void
pers_close (df_cache *c)
{
  int err = 0;

  if (c->store_priv == NULL)
    return;
  if (g_atomic_int_get (&c->abandoned))
    g_message ("cache %s: closed without a final flush (its writer lost "
               "the right to write it)", c->dir);
  else if (pers_flush (c, &err) == -1)
    g_warning ("cache %s: final flush failed: %s", c->dir, g_strerror (err));
  pers_free (c->store_priv);
  c->store_priv = NULL;
}

static const df_cache_store_ops pers_store_ops = {
  .name = "cache-server-persistent",
  .read = pers_read,
  .write = pers_write,
  .discard = pers_discard,
  .changed = pers_changed,
  .flush = pers_flush,
  .close = pers_close,
};

/* ---- open --------------------------------------------------------------- */

bool
df_cache_persistent_lock (int fd, const char *path, const char *what, GError **err)
{
  if (flock (fd, LOCK_EX | LOCK_NB) == 0)
    return true;
  if (errno == EWOULDBLOCK)
    g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                 "%s %s is in use by another process", what, path);
  else
    df_set_error_errno (err, errno, "lock %s", path);
  return false;
}

/* The map's flock, unless a cache lease is the lock (shared storage,
 * where flock is absent, per host, or outlives a dead host for minutes). */
static bool
map_lock (df_cache *c, int fd, const char *path, const char *what,
          GError **err)
{
  return c->mode.leased || df_cache_persistent_lock (fd, path, what, err);
}

/* Open or create <prefix>.map + <prefix>.data into s; fills c->state on
 * reopen.  what names the cache in messages. */
static bool
open_files (df_cache *c, pers_store *s, const char *prefix, const char *what,
            GError **err)
{
  g_autofree char *map_name = g_strconcat (prefix, DF_CACHE_MAP_SUFFIX, NULL);
  g_autofree char *data_name = g_strconcat (prefix, DF_CACHE_DATA_SUFFIX,
                                            NULL);
  g_autofree char *map_path = g_build_filename (c->dir, map_name, NULL);
  g_autofree char *data_path = g_build_filename (c->dir, data_name, NULL);

  s->map_fd = open (map_path, O_RDWR | O_CLOEXEC);
  if (s->map_fd < 0 && errno != ENOENT)
    return open_fail (err, "open", map_path), false;
  if (s->map_fd < 0)
    {
      s->data_fd = create_data (c, data_path, err);
      if (s->data_fd < 0)
        return false;
      s->map_fd = create_map (c, map_path, err);
      return s->map_fd >= 0 && map_lock (c, s->map_fd, map_path, what, err);
    }
  if (!map_lock (c, s->map_fd, map_path, what, err)
      || !load_entries (c, s->map_fd, map_path, err))
    return false;
  s->data_fd = open_data (c, data_path, err);
  if (s->data_fd < 0)
    return false;
  reclaim_unmapped (c, s->data_fd);
  return true;
}

bool
df_cache_durable_open (df_cache *c, const char *prefix, const char *what,
                       GError **err)
{
  pers_store *s = g_new0 (pers_store, 1);

  s->data_fd = s->map_fd = -1;
  g_mutex_init (&s->flush_lock);
  s->dirty = g_try_malloc0 (((c->nblocks + 63) / 64 + 1) * sizeof (uint64_t));
  if (s->dirty == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "cache %s: no memory for the dirty map", c->dir);
      pers_free (s);
      return false;
    }
  if (!open_files (c, s, prefix, what, err))
    {
      c->cached_blocks = 0;
      pers_free (s);
      return false;
    }
  c->store_priv = s;
  c->store = &pers_store_ops;
  return true;
}

bool
df_cache_persistent_open (df_cache *c, GError **err)
{
  return df_cache_durable_open (c, DF_CACHE_PERSISTENT_PREFIX,
                                "persistent cache", err);
}
