/* streamsvc --relay: the stream servers a relay reads from.
 *
 * Either a fixed list (--upstream HOST:PORT, repeatable) or the farm's
 * registry (lib/farm registry: stream servers whose heartbeat is fresh,
 * re-read at most every DF_RELAY_REGISTRY_REFRESH_MS).  A server that
 * failed is skipped for DF_RELAY_DOWN_MS unless none other is left.
 *
 * Thread safety: all functions may be called from any thread.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define DF_RELAY_REGISTRY_REFRESH_MS 1000
#define DF_RELAY_DOWN_MS 3000

typedef struct DfRelayUpstreams DfRelayUpstreams;

/* addrs: "HOST:PORT" ("[V6]:PORT") strings, checked here; one bad one:
 * NULL + err naming it. */
DfRelayUpstreams *df_relay_upstreams_new_fixed (char **addrs, GError **err);
/* The farm's registry (farm_dir, db as df_farm_open_db); read once here
 * so that a farm that cannot be opened is an error at start. */
DfRelayUpstreams *df_relay_upstreams_new_registry (const char *farm_dir,
                                                   const char *db,
                                                   GError **err);
void df_relay_upstreams_free (DfRelayUpstreams *u);

/* The server to try after the one named after (NULL: the first choice):
 * prefer ("host:port", nullable) when it is listed and not marked down,
 * else round robin over those not marked down, else over all.  *host and
 * *port receive new strings; false when there is no server at all. */
bool df_relay_upstreams_pick (DfRelayUpstreams *u, const char *after,
                              const char *prefer, char **host, char **port);
/* host:port failed: skip it for a while. */
void df_relay_upstreams_mark_down (DfRelayUpstreams *u, const char *host,
                                   const char *port);
