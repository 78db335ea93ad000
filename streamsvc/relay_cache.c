/* streamsvc --relay: the shared read cache (relay_cache.h). */
#define G_LOG_DOMAIN "streamsvc"

#include "relay_cache.h"

#include <string.h>

typedef enum { CHUNK_LOADING, CHUNK_READY } ChunkState;

typedef struct
{
  const char *key; /* interned version hash */
  uint64_t index;
  ChunkState state;
  uint8_t *data;   /* owned; len bytes once READY */
  uint32_t len;
  GList *lru;      /* READY: its link in DfRelayCache.lru (head: newest) */
} Chunk;

struct DfRelayCache
{
  GMutex lock;
  GCond loaded;      /* a chunk left LOADING */
  GHashTable *chunks; /* Chunk* -> itself (owned) */
  GQueue lru;         /* READY chunks, most recently used first */
  uint64_t budget;
  DfRelayCacheStats st;
};

static guint
chunk_hash (gconstpointer p)
{
  const Chunk *k = p;

  return g_direct_hash (k->key) ^ g_int64_hash (&k->index);
}

static gboolean
chunk_equal (gconstpointer a, gconstpointer b)
{
  const Chunk *x = a, *y = b;

  return x->key == y->key && x->index == y->index;
}

static void
chunk_free (gpointer p)
{
  Chunk *k = p;

  g_free (k->data);
  g_free (k);
}

DfRelayCache *
df_relay_cache_new (uint64_t budget)
{
  DfRelayCache *c = g_new0 (DfRelayCache, 1);

  g_assert (budget >= DF_RELAY_CHUNK);
  g_mutex_init (&c->lock);
  g_cond_init (&c->loaded);
  c->chunks = g_hash_table_new_full (chunk_hash, chunk_equal, NULL,
                                     chunk_free);
  g_queue_init (&c->lru);
  c->budget = budget;
  return c;
}

void
df_relay_cache_free (DfRelayCache *c)
{
  if (c == NULL)
    return;
  g_queue_clear (&c->lru);
  g_hash_table_destroy (c->chunks);
  g_cond_clear (&c->loaded);
  g_mutex_clear (&c->lock);
  g_free (c);
}

/* Drop least recently used chunks until len more bytes fit.  Caller holds
 * the lock. */
static void
make_room_locked (DfRelayCache *c, uint32_t len)
{
  while (c->st.cached_bytes + len > c->budget && c->lru.tail != NULL)
    {
      Chunk *old = c->lru.tail->data;

      g_queue_delete_link (&c->lru, c->lru.tail);
      c->st.cached_bytes -= old->len;
      c->st.evicted++;
      g_hash_table_remove (c->chunks, old);
    }
}

/* The chunk of (key, index), READY or ours to load (*mine), waiting while
 * another thread loads it.  Caller holds the lock. */
static Chunk *
chunk_get_locked (DfRelayCache *c, const char *key, uint64_t index,
                  bool *mine)
{
  Chunk probe = { .key = key, .index = index };
  Chunk *k;

  while ((k = g_hash_table_lookup (c->chunks, &probe)) != NULL
         && k->state == CHUNK_LOADING)
    g_cond_wait (&c->loaded, &c->lock);
  *mine = k == NULL;
  if (k == NULL)
    {
      k = g_new0 (Chunk, 1);
      *k = probe;
      k->state = CHUNK_LOADING;
      g_hash_table_add (c->chunks, k);
    }
  else
    {
      g_queue_unlink (&c->lru, k->lru);
      g_queue_push_head_link (&c->lru, k->lru);
    }
  return k;
}

/* Load chunk k (ours, LOADING) without the lock, then publish it (or drop
 * it on failure).  Returns the chunk's data (owned by the cache: copy it
 * before unlocking) or NULL + *err.  Called and returns with the lock. */
static const uint8_t *
chunk_load_locked (DfRelayCache *c, Chunk *k, uint64_t size,
                   DfRelayFetch fetch, void *opaque, int *err)
{
  uint64_t start = k->index * DF_RELAY_CHUNK;
  uint32_t len = (uint32_t) MIN ((uint64_t) DF_RELAY_CHUNK, size - start);
  uint8_t *data = g_malloc (len);
  int rc;

  g_mutex_unlock (&c->lock);
  rc = fetch (opaque, data, len, start, err);
  g_mutex_lock (&c->lock);
  g_cond_broadcast (&c->loaded);
  if (rc < 0)
    {
      g_free (data);
      g_hash_table_remove (c->chunks, k);
      return NULL;
    }
  c->st.fetch_bytes += len;
  make_room_locked (c, len);
  k->data = data;
  k->len = len;
  k->state = CHUNK_READY;
  g_queue_push_head (&c->lru, k);
  k->lru = c->lru.head;
  c->st.cached_bytes += len;
  return data;
}

int
df_relay_cache_read (DfRelayCache *c, const char *key, uint64_t size,
                     void *buf, uint32_t count, uint64_t offset,
                     DfRelayFetch fetch, void *opaque, int *err)
{
  const char *ikey = g_intern_string (key);
  uint8_t *out = buf;

  g_assert (count > 0 && offset + count <= size);
  g_mutex_lock (&c->lock);
  while (count > 0)
    {
      uint64_t index = offset / DF_RELAY_CHUNK;
      uint32_t skip = (uint32_t) (offset % DF_RELAY_CHUNK);
      bool mine;
      Chunk *k = chunk_get_locked (c, ikey, index, &mine);
      const uint8_t *data = mine ? chunk_load_locked (c, k, size, fetch,
                                                      opaque, err)
                                 : k->data;
      uint32_t n;

      if (data == NULL)
        {
          g_mutex_unlock (&c->lock);
          return -1;
        }
      n = MIN (count, k->len - skip);
      memcpy (out, data + skip, n);
      if (!mine)
        c->st.hit_bytes += n;
      out += n;
      offset += n;
      count -= n;
    }
  g_mutex_unlock (&c->lock);
  return 0;
}

void
df_relay_cache_stats (DfRelayCache *c, DfRelayCacheStats *out)
{
  g_mutex_lock (&c->lock);
  *out = c->st;
  g_mutex_unlock (&c->lock);
}
