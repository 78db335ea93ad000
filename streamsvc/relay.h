/* streamsvc --relay: an NBD server on the hypervisor for its VMs.
 *
 * The relay serves the export names of the farm (exports.h grammar)
 * through streamsvc's own NBD engine; each export it opens is a df_blk
 * whose requests go upstream, through libnbd, to one of the farm's stream
 * servers (relay_upstream.h).  It holds no device state: in cache mode
 * hypervisor the VM's writes go to its qcow2 overlay on this host and the
 * relay carries reads only, so any server can answer any request.
 *
 * Failover: an upstream that closes, errors at the transport or does not
 * answer within the request timeout is dropped; the request in flight
 * (the engine runs one request of a connection at a time, so requests are
 * replayed in order) is sent again to the next server, which must serve
 * the same content (same size and, for hashed exports, the same version
 * hash), until the stall bound passes: then EIO.  A FLUSH is always
 * forwarded, never acknowledged by the relay alone.
 *
 * Writable exports (device exports of the server-side cache modes) are
 * forwarded as they are; when their upstream dies, the writes it
 * acknowledged but did not flush are in that server's cache, which no
 * other server has (cache failover is tier 2 of issue 13), so from then
 * on every request of that export fails with EIO (logged once): never a
 * read from a server that does not hold the writes.
 *
 * Read cache: read-only exports that name their version hash read through
 * the relay's shared cache (relay_cache.h), when it has a budget.
 *
 * Thread safety: all functions may be called from any thread.
 */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "blk.h"
#include "relay_cache.h"
#include "relay_upstream.h"

#define DF_RELAY_STALL_DEFAULT 15      /* seconds a request may stall */
#define DF_RELAY_STALL_MAX 3600
#define DF_RELAY_TIMEOUT_DEFAULT 5     /* seconds without an answer: dead */
#define DF_RELAY_CACHE_DEFAULT "256M"  /* read cache budget */

typedef struct DfRelay DfRelay;

typedef struct {
  DfRelayUpstreams *upstreams; /* taken */
  uint64_t cache_bytes;        /* 0: no read cache */
  guint stall_s;               /* a request fails after that long */
  guint timeout_s;             /* an upstream silent that long is dead */
} DfRelayConf;

DfRelay *df_relay_new (DfRelayConf *c);
/* Exports must be closed first. */
void df_relay_free (DfRelay *r);

/* exports.h DfExportSource open: connects upstream; the blk presents the
 * upstream export's size and flags; *description is the upstream's. */
df_blk *df_relay_open (void *relay, const char *name, char **description,
                       GError **err);

typedef struct {
  uint64_t upstream_read_bytes; /* bytes read from servers */
  uint64_t client_read_bytes;   /* bytes read by the relay's clients */
  uint64_t failovers;           /* requests replayed on another server */
  uint64_t stall_max_ms;        /* longest stall of a replayed request */
  DfRelayCacheStats cache;
} DfRelayStats;
void df_relay_stats (DfRelay *r, DfRelayStats *out);
/* One log line of the counters ("relay: ..."). */
void df_relay_log_stats (DfRelay *r);
