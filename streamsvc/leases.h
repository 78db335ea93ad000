/* streamsvc: the cache leases this server holds (issue 13 tier 2).
 *
 * A DfLeaseKeeper takes the farm DB lease of a device's shared cache
 * (df_farm_lease_acquire), stamps its epoch next to the cache (blk_lease.h)
 * and renews every lease it holds every ttl/3 from its own thread and its
 * own farm DB handle.  Each successful renewal extends the local lease to
 * (monotonic time the renewal was sent) + ttl - margin; the DB's expiry is
 * the holder's wall time at sending + ttl and a survivor takes over only
 * after expiry + margin, so the old holder stops writing at least 2 x
 * margin (less any clock skew) before anyone else may start.  A renewal
 * the DB refuses (taken over) loses the lease at once; one the DB cannot
 * answer changes nothing: the local deadline passes and the lease layer
 * refuses from then on, and the keeper loses it as soon as it sees the
 * deadline passed (which closes the cache's sessions).
 *
 * Thread safety: every function may be called from any thread.
 */
#pragma once

#include "blk_lease.h"
#include "farm.h"

/* Lease length when --lease-time is not given, and the margin's share. */
#define DF_LEASE_TTL_MS_DEFAULT 9000
#define DF_LEASE_MARGIN_DIV 4      /* margin = ttl / 4 */

typedef struct DfLeaseKeeper DfLeaseKeeper;

/* server: this server's registry name (borrowed for the keeper's life).
 * farm_dir and db open the keeper's own DB handle.  New keeper. */
DfLeaseKeeper *df_lease_keeper_new (const char *farm_dir, const char *db,
                                    const char *server, gint64 ttl_ms);
void df_lease_keeper_free (DfLeaseKeeper *k);

gint64 df_lease_keeper_ttl_ms (DfLeaseKeeper *k);

/* Wait (at most ttl + 2 x margin + 1 s) until device's lease is free,
 * ours, or lapsed; then true.  Otherwise false + DF_ERROR_BUSY naming the
 * server that holds it.  Call without any lock held. */
bool df_lease_keeper_wait (DfLeaseKeeper *k, DfFarm *farm, const char *device,
                           GError **err);

/* Take device's lease for generation, stamp token_dir and keep it renewed.
 * fence trips when it is lost.  New lease ref (caller's), or NULL + err. */
DfLease *df_lease_keeper_take (DfLeaseKeeper *k, DfFarm *farm,
                               const char *device, gint64 generation,
                               const char *token_dir, DfFence *fence,
                               GError **err);
/* Stop renewing l (taken for device) and release it in the DB when it is
 * still ours: the next server takes it without waiting.  Call only once
 * its cache is closed. */
void df_lease_keeper_drop (DfLeaseKeeper *k, DfLease *l, const char *device);

/* Counters for /metrics. */
guint64 df_lease_keeper_takeovers (DfLeaseKeeper *k);
guint64 df_lease_keeper_losses (DfLeaseKeeper *k);
