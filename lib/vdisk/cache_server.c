/* diskfarm: volatile write-cache stores.
 *   server:    blocks in an unlinked, sparse temporary file in the device's
 *              cache directory, each at its guest offset.
 *   ram:<MiB>: blocks in RAM (hash table block -> 4 KiB buffer) up to the
 *              limit; blocks allocated past it go to an overflow temporary
 *              file laid out as for `server`.
 * Nothing survives the process (kill -9 leaves nothing behind: the files
 * are unlinked from the start) and flush is a no-op: these caches are
 * volatile by design (reset at the next boot of the device). */
#include "cache_int.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define BS    DF_CACHE_BLOCK_SIZE
#define SHIFT DF_CACHE_BLOCK_SHIFT

/* ---- server ------------------------------------------------------------- */

typedef struct {
  int fd;                     /* owned; unlinked temporary file */
} server_store;

static int
server_read (df_cache *c, void *buf, size_t len, uint64_t off, int *err)
{
  server_store *s = c->store_priv;

  return df_cache_file_read (c, s->fd, buf, len, off, err);
}

static int
server_write (df_cache *c, const void *buf, uint64_t blk, uint64_t n,
              int *err)
{
  server_store *s = c->store_priv;

  return df_cache_file_write (c, s->fd, buf, n << SHIFT, blk << SHIFT, err);
}

static void
server_discard (df_cache *c, uint64_t blk, uint64_t n)
{
  server_store *s = c->store_priv;

  df_cache_file_punch (c, s->fd, blk << SHIFT, n << SHIFT);
}

static void
server_close (df_cache *c)
{
  server_store *s = c->store_priv;

  if (s != NULL)
    close (s->fd);
  g_free (s);
  c->store_priv = NULL;
}

static const df_cache_store_ops server_store_ops = {
  .name = "cache-server",
  .read = server_read,
  .write = server_write,
  .discard = server_discard,
  .close = server_close,
};

bool
df_cache_server_open (df_cache *c, GError **err)
{
  int fd = df_cache_tmpfile (c->dir, c->nblocks << SHIFT, err);
  server_store *s;

  if (fd < 0)
    return false;
  s = g_new0 (server_store, 1);
  s->fd = fd;
  c->store_priv = s;
  c->store = &server_store_ops;
  return true;
}

/* ---- ram ---------------------------------------------------------------- */

typedef struct {
  GHashTable *blocks;         /* block index -> owned 4 KiB buffer;
                               * under c->lock */
  int fd;                     /* owned; overflow temporary file */
} ram_store;

#define BLK_KEY(b) GSIZE_TO_POINTER ((gsize) (b))

/* RAM buffer of block blk, or NULL when it lives in the overflow file.
 * The buffer stays valid while the caller holds a range lock on blk. */
static uint8_t *
ram_lookup (df_cache *c, uint64_t blk)
{
  ram_store *s = c->store_priv;
  uint8_t *p;

  g_mutex_lock (&c->lock);
  p = g_hash_table_lookup (s->blocks, BLK_KEY (blk));
  g_mutex_unlock (&c->lock);
  return p;
}

static int
ram_read (df_cache *c, void *buf, size_t len, uint64_t off, int *err)
{
  ram_store *s = c->store_priv;
  uint8_t *dst = buf;

  while (len > 0)
    {
      uint64_t blk = off >> SHIFT;
      size_t in = off & (BS - 1);
      size_t piece = MIN (len, BS - in);
      uint8_t *p = ram_lookup (c, blk);

      if (p != NULL)
        memcpy (dst, p + in, piece);
      else if (df_cache_file_read (c, s->fd, dst, piece, off, err) == -1)
        return -1;
      dst += piece, off += piece, len -= piece;
    }
  return 0;
}

/* Where block blk is to be written: its RAM buffer (allocated now if it is
 * a new block and the limit allows), or NULL for the overflow file.  A
 * block already in the overflow file stays there. */
static uint8_t *
ram_slot (df_cache *c, uint64_t blk)
{
  ram_store *s = c->store_priv;
  uint8_t *p;

  g_mutex_lock (&c->lock);
  p = g_hash_table_lookup (s->blocks, BLK_KEY (blk));
  if (p == NULL && c->state[blk] != DF_CB_CACHED
      && c->ram_bytes + BS <= c->mode.ram_limit)
    {
      p = g_malloc (BS);
      g_hash_table_insert (s->blocks, BLK_KEY (blk), p);
      c->ram_bytes += BS;
    }
  g_mutex_unlock (&c->lock);
  return p;
}

static int
ram_write (df_cache *c, const void *buf, uint64_t blk, uint64_t n, int *err)
{
  ram_store *s = c->store_priv;
  const uint8_t *src = buf;

  for (uint64_t i = 0; i < n;)
    {
      uint8_t *p = ram_slot (c, blk + i);
      uint64_t run = 1;

      if (p != NULL)
        {
          memcpy (p, src + (i << SHIFT), BS);
          i++;
          continue;
        }
      /* Overflow: write the whole run of file-bound blocks at once. */
      while (i + run < n && ram_slot (c, blk + i + run) == NULL)
        run++;
      if (df_cache_file_write (c, s->fd, src + (i << SHIFT), run << SHIFT,
                               (blk + i) << SHIFT, err) == -1)
        return -1;
      i += run;
      if (i < n) /* the block that ended the run got a RAM slot */
        {
          memcpy (ram_lookup (c, blk + i), src + (i << SHIFT), BS);
          i++;
        }
    }
  return 0;
}

static void
ram_discard (df_cache *c, uint64_t blk, uint64_t n)
{
  ram_store *s = c->store_priv;

  for (uint64_t i = 0; i < n; i++)
    {
      gpointer p = NULL;

      g_mutex_lock (&c->lock);
      if (g_hash_table_steal_extended (s->blocks, BLK_KEY (blk + i), NULL,
                                       &p))
        c->ram_bytes -= BS;
      g_mutex_unlock (&c->lock);
      if (p != NULL)
        g_free (p);
      else
        df_cache_file_punch (c, s->fd, (blk + i) << SHIFT, BS);
    }
}

static void
ram_close (df_cache *c)
{
  ram_store *s = c->store_priv;

  if (s == NULL)
    return;
  g_hash_table_destroy (s->blocks);
  close (s->fd);
  g_free (s);
  c->store_priv = NULL;
  c->ram_bytes = 0;
}

static const df_cache_store_ops ram_store_ops = {
  .name = "cache-ram",
  .read = ram_read,
  .write = ram_write,
  .discard = ram_discard,
  .close = ram_close,
};

bool
df_cache_ram_open (df_cache *c, GError **err)
{
  ram_store *s;
  int fd;

  if (c->mode.ram_limit == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "invalid cache mode");
      return false;
    }
  fd = df_cache_tmpfile (c->dir, c->nblocks << SHIFT, err);
  if (fd < 0)
    return false;
  s = g_new0 (ram_store, 1);
  s->fd = fd;
  s->blocks = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL,
                                     g_free);
  c->store_priv = s;
  c->store = &ram_store_ops;
  return true;
}
