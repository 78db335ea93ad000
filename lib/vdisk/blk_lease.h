/* diskfarm: the lease layer (a df_blk over a write cache on shared
 * storage, issue 13 tier 2).
 *
 * A DfLease is the local side of a cache lease held in the farm DB
 * (lib/farm leases.c): its epoch (the fencing token) and the moment, on
 * this host's monotonic clock, until which this server may still write
 * (df_lease_extend; the renewer sets it to the time it sent a successful
 * renewal + ttl - margin, so it always ends before the DB's expiry, and a
 * survivor waits expiry + margin more).  The layer is the cache's only
 * writer path:
 *   - every write, zero, trim and flush is refused with EIO unless the
 *     lease is valid when it starts, and a FLUSH or FUA request is
 *     acknowledged only if the lease is still valid when it completed;
 *   - a FLUSH also reads the token file next to the cache and refuses
 *     (and loses the lease) when it holds another epoch: a survivor
 *     stamped it, so this server is a stale writer;
 *   - the first refusal (or df_lease_lose) trips the fence given at
 *     creation as moved (df_fence_trip_moved: the device carries on at the
 *     server that takes the lease next), which closes every session of
 *     the cache;
 *   - the durable store under it asks the lease again right before each
 *     write to its files (df_cache_set_writer), so a request that started
 *     under a valid lease and was slow (a delayed FLUSH) cannot write
 *     after it ran out;
 *   - when the layer goes away without a valid lease, the cache under it
 *     is abandoned (df_cache_abandon): no final flush.
 * Reads pass through.  What no host-side check can stop is an I/O the
 * kernel already queued when the lease ran out: the margin (leases.h) is
 * the bound on how long the storage may take to complete one.
 *
 * Test hook: DISKFARM_TEST_WRITE_JOURNAL=<file> appends one line per
 * write to the cache's files, "<epoch> <label> <start ns> <end ns> <op>"
 * (CLOCK_REALTIME; op take, data, map or hole), so a test can prove that
 * no two epochs ever wrote at once.
 *
 * Thread safety: everything may be called from any thread.
 */
#pragma once

#include "blk.h"
#include "blk_fence.h"

/* The token file of a leased cache directory. */
#define DF_LEASE_TOKEN_FILE "lease.epoch"

typedef struct DfLease DfLease;

/* A lease of epoch (> 0) valid until valid_until_us (g_get_monotonic_time
 * scale).  token_dir (nullable): the cache directory whose token file is
 * stamped with epoch now; refused (DF_ERROR_DENIED) when it already holds
 * a newer epoch.  fence (ref taken) trips when the lease is lost.  label
 * names the holder in logs and the journal (no spaces).  New lease
 * (refcount 1) or NULL + err. */
DfLease *df_lease_new (const char *label, gint64 epoch,
                       gint64 valid_until_us, const char *token_dir,
                       DfFence *fence, GError **err);
DfLease *df_lease_ref (DfLease *l);
void df_lease_unref (DfLease *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfLease, df_lease_unref)

gint64 df_lease_epoch (DfLease *l);
/* Move the end of validity (never back once lost). */
void df_lease_extend (DfLease *l, gint64 valid_until_us);
/* Valid now: not lost and the monotonic clock is before its end. */
bool df_lease_valid (DfLease *l);
/* Lose it for good (idempotent): logs once, trips the fence. */
void df_lease_lose (DfLease *l, const char *reason);
bool df_lease_lost (DfLease *l);

/* A new layer over inner (refcount 1), taking refs of l and inner. */
df_blk *df_lease_blk_new (DfLease *l, df_blk *inner);

/* A disk whose write cache is gone (a local cache that died with its
 * server, issue 13 tier 3): size bytes, and every request, reads
 * included, fails with EIO; serving the version under it instead would
 * hand the running OS blocks older than what it wrote.  New layer. */
df_blk *df_lost_blk_new (uint64_t size);
