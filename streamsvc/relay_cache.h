/* streamsvc --relay: the shared read cache of pinned versions.
 *
 * One cache per relay, shared by every export it serves, in RAM, bounded
 * by a byte budget (least recently used chunks go first).  A chunk is
 * keyed by (the version file's SHA-256, chunk index): two exports of one
 * sealed version share it, whichever server they came from, and a new
 * version (another hash) never reads an old one's chunks.  Only exports
 * that name their hash (exports.h DF_EXPORT_DESC_SHA256: read-only
 * exports of a sealed version) are cached.
 *
 * A chunk being fetched is marked loading: a second reader of it waits
 * for the first fetch instead of fetching it again, so N clients booting
 * one vDisk at once fetch each chunk once upstream.
 *
 * Thread safety: all functions may be called from any thread.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define DF_RELAY_CHUNK (64u * 1024) /* cache granularity, bytes */

typedef struct DfRelayCache DfRelayCache;

/* Fetch chunk bytes [offset, offset + count) upstream into buf (count is
 * a whole chunk, or the tail of the export).  0 or -1 + *err (errno). */
typedef int (*DfRelayFetch) (void *opaque, void *buf, uint32_t count,
                             uint64_t offset, int *err);

/* budget: bytes of chunk data kept at most (>= DF_RELAY_CHUNK). */
DfRelayCache *df_relay_cache_new (uint64_t budget);
void df_relay_cache_free (DfRelayCache *c);

/* Read [offset, offset + count) of the export whose version hash is key
 * (size bytes long) into buf, through the cache: chunks not cached are
 * fetched by fetch(opaque, ...).  0 or -1 + *err (fetch's errno). */
int df_relay_cache_read (DfRelayCache *c, const char *key, uint64_t size,
                         void *buf, uint32_t count, uint64_t offset,
                         DfRelayFetch fetch, void *opaque, int *err);

typedef struct {
  uint64_t hit_bytes;    /* bytes served from cached chunks */
  uint64_t fetch_bytes;  /* bytes fetched upstream into the cache */
  uint64_t cached_bytes; /* bytes held now */
  uint64_t evicted;      /* chunks dropped for room */
} DfRelayCacheStats;
void df_relay_cache_stats (DfRelayCache *c, DfRelayCacheStats *out);
