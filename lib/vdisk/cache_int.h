/* diskfarm: write cache internals shared by cache.c (block map, locking,
 * request logic), the mode table (cache_modes.c) and the stores that hold
 * the cached data (cache_server.c: server + ram, cache_persistent.c:
 * server-persistent, cache_private.c: private).
 *
 * Model: the disk is cut in 4 KiB blocks; each block is BASE (read from the
 * base df_blk), CACHED (read from the store) or ZERO (reads zeros, holds no
 * space).  cache.c turns every request into whole-block operations on the
 * store; a store only moves whole blocks (and reads byte ranges inside
 * CACHED blocks).
 *
 * Locking: c->lock (a mutex) protects the block map, the counters, the
 * range-lock list and any map a store keeps (e.g. the RAM hash table).  Each
 * request first takes a range lock on its blocks (shared for reads and
 * extents, exclusive for writes/trim/zero); while it holds one, the state of
 * those blocks cannot change under it, so it may read c->state[] for them
 * and do the data I/O without holding c->lock. */
#pragma once

#include "common.h"
#include "vdisk.h"

#define DF_CACHE_BLOCK_MASK  ((uint64_t) DF_CACHE_BLOCK_SIZE - 1)

/* Block states.  Also the on-disk map entry values of server-persistent. */
enum { DF_CB_BASE = 0, DF_CB_CACHED = 1, DF_CB_ZERO = 2, DF_CB_N_STATES };

typedef struct df_cache_range df_cache_range;

/* Where a mode keeps its data.  Data functions are called with the blocks'
 * range lock held (exclusive for write/discard) and c->lock NOT held. */
typedef struct {
  const char *name;                      /* "cache-server", ... */
  /* Read len bytes at guest offset off; all of it inside CACHED blocks. */
  int (*read) (df_cache *c, void *buf, size_t len, uint64_t off, int *err);
  /* Store n whole blocks from buf starting at block blk.  They are not yet
   * CACHED in c->state (cache.c flips them after success). */
  int (*write) (df_cache *c, const void *buf, uint64_t blk, uint64_t n,
                int *err);
  /* Release the space of n blocks that just stopped being CACHED.
   * Advisory: failures are ignored (they only cost space). */
  void (*discard) (df_cache *c, uint64_t blk, uint64_t n);
  /* Called with c->lock held whenever c->state[blk] changes.  May be NULL. */
  void (*changed) (df_cache *c, uint64_t blk);
  /* Make acknowledged writes stable.  NULL for volatile stores. */
  int (*flush) (df_cache *c, int *err);
  /* Flush if durable, then free the store state (c->store_priv). */
  void (*close) (df_cache *c);
} df_cache_store_ops;

struct df_cache {   /* typedef in vdisk.h */
  df_blk blk;                 /* must be first */
  df_blk *base;               /* owned reference */
  char *dir;                  /* owned: device cache directory */
  DfCacheMode mode;
  uint64_t nblocks;           /* ceil (size / 4 KiB) */
  const df_cache_store_ops *store;
  void *store_priv;           /* owned by the store, freed by store->close */

  GMutex lock;                /* protects everything below */
  GCond range_cond;           /* signalled when a range lock is released */
  df_cache_range *ranges;     /* range locks currently held */
  uint8_t *state;             /* nblocks entries (owned; cache.c maps
                               * it: pages appear as blocks leave BASE) */
  uint64_t cached_blocks;     /* blocks in state CACHED */
  uint64_t reserved_blocks;   /* quota reserved by writes in flight */
  uint64_t ram_bytes;         /* RAM held by the ram store */
  uint64_t quota;             /* bytes, 0 = none */
  uint64_t quota_hits;
  gint64 last_quota_warning;  /* monotonic us, 0 = never */
  gint abandoned;             /* atomic: df_cache_abandon (close no flush) */
  DfCacheWriter writer;       /* df_cache_set_writer; zeroed: anyone */
  void *writer_data;          /* owned, freed with writer_free */
  GDestroyNotify writer_free;
};

/* Stores call these around each write to their files: false (EIO, logged
 * by the writer) when the writer may no longer write; *t0 for done. */
bool df_cache_may_write (df_cache *c, gint64 *t0);
void df_cache_wrote (df_cache *c, const char *op, gint64 t0);

/* Stores: fill c->store and c->store_priv.  c->state is allocated (all
 * BASE); the persistent store loads it from its map.  false + err. */
bool df_cache_server_open (df_cache *c, GError **err);
bool df_cache_ram_open (df_cache *c, GError **err);
bool df_cache_persistent_open (df_cache *c, GError **err);
bool df_cache_private_open (df_cache *c, GError **err);
/* The durable data + map store (cache_persistent.c) under the names
 * <prefix>.data and <prefix>.map in c->dir; what names it in messages
 * ("persistent cache"). */
bool df_cache_durable_open (df_cache *c, const char *prefix, const char *what,
                            GError **err);

/* Helpers for stores that keep blocks in a file at the guest offset. */
/* An unlinked temporary file in dir (O_TMPFILE, else mkstemp + unlink)
 * sized to size bytes (sparse).  Returns the fd (caller owns) or -1 + err. */
int df_cache_tmpfile (const char *dir, uint64_t size, GError **err);
/* pread/pwrite the whole range; -1 with *err = errno and one log line. */
int df_cache_file_read (df_cache *c, int fd, void *buf, size_t len,
                        uint64_t off, int *err);
int df_cache_file_write (df_cache *c, int fd, const void *buf, size_t len,
                         uint64_t off, int *err);
/* Punch a hole (space only; failures are logged at debug level). */
void df_cache_file_punch (df_cache *c, int fd, uint64_t off, uint64_t len);

/* File names in a device's cache directory.  The durable store keeps
 * <prefix>.data + <prefix>.map (and <prefix>.map.tmp while it makes one). */
#define DF_CACHE_DATA_SUFFIX ".data"
#define DF_CACHE_MAP_SUFFIX  ".map"
#define DF_CACHE_TMP_SUFFIX  ".tmp"
#define DF_CACHE_PERSISTENT_PREFIX "persistent"
#define DF_CACHE_PRIVATE_PREFIX    "private"
/* The pin of a private image (cache_private.c). */
#define DF_CACHE_PIN_FILE DF_CACHE_PRIVATE_PREFIX ".base"

/* Name prefix of temporary files in a cache directory (for discard_dir). */
#define DF_CACHE_TMP_PREFIX "tmp-cache."
