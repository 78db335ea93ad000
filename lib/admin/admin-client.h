/* diskfarm: the one client of streamsvc's admin HTTP API (libsoup 3).
 *
 * Synchronous, for the console: each call opens its own SoupSession and
 * has DF_ADMIN_TIMEOUT_S for the whole request (connect to last byte: a
 * server trickling its answer cannot hold the caller), never goes through an HTTP
 * proxy (the admin API is on loopback or the farm's LAN), reads at most
 * DF_ADMIN_MAX_BODY bytes and returns the parsed JSON of a 200 answer.
 * Errors name the address asked: "admin API at 127.0.0.1:8001: ...".
 *
 * The farm-wide view built on it (which server holds which session, and
 * which servers belong to this farm) is live.h.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "conf.h"   /* DF_ADMIN_PORT */

/* streamsvc's admin port, when an address names none. */
#define DF_ADMIN_TIMEOUT_S 3
#define DF_ADMIN_MAX_BODY (16u * 1024 * 1024)

/* Split "HOST:PORT" ("[v6]:PORT"; PORT defaults to DF_ADMIN_PORT) into
 * *host (new string) and *port.  DF_ERROR_INVALID on a malformed address. */
bool df_admin_addr_parse (const char *addr, char **host, guint16 *port,
                          GError **err);

typedef struct DfAdminHealth DfAdminHealth;

/* Where a streamsvc admin API is and how to ask it: TCP (host, port) or
 * a UNIX socket (unix_path), and the bearer token sent on TCP (nullable:
 * then only /metrics and /v1/health answer). */
typedef struct {
  char *host;           /* NULL for a UNIX socket */
  guint16 port;
  char *unix_path;      /* NULL for TCP */
  char *token;          /* a secret (df_secret_free), nullable */
} DfAdminEndpoint;
void df_admin_endpoint_free (DfAdminEndpoint *ep);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfAdminEndpoint, df_admin_endpoint_free)
/* New endpoint for TCP host:port or unix_path (exactly one given), with a
 * copy of token (nullable). */
DfAdminEndpoint *df_admin_endpoint_new (const char *host, guint16 port,
                                        const char *unix_path,
                                        const char *token);
/* "HOST:PORT" ([v6]:PORT) or "unix:PATH" into a new endpoint without a
 * token, or NULL + DF_ERROR_INVALID. */
DfAdminEndpoint *df_admin_endpoint_parse (const char *addr, GError **err);
/* "host:port", "[v6]:port" or "unix:PATH", for messages (new string). */
char *df_admin_endpoint_text (const DfAdminEndpoint *ep);

/* GET <path> of ep: the parsed body of a 200 answer (new node), or NULL +
 * err as df_admin_get; a 401 says the token is missing or wrong. */
JsonNode *df_admin_get_at (const DfAdminEndpoint *ep, const char *path,
                           GError **err);
DfAdminHealth *df_admin_health_at (const DfAdminEndpoint *ep, GError **err);
JsonNode *df_admin_sessions_at (const DfAdminEndpoint *ep, GError **err);

/* POST DF_ADMIN_OFFLINE_GENERATIONS (defaults.h) to ep (its bearer
 * token): a bootstrap server tells a stream server the boot generation
 * it gave offline.  device must be a valid device name (not escaped).
 * False + err as df_admin_get_at. */
bool df_admin_offline_generation_at (const DfAdminEndpoint *ep,
                                     const char *device, gint64 generation,
                                     GError **err);

/* GET http://host:port<path>.  The parsed body of a 200 answer (new node,
 * json_node_unref), or NULL + err: DF_ERROR_IO when the server cannot be
 * reached or times out, DF_ERROR_INVALID for another status, a body over
 * DF_ADMIN_MAX_BODY or one that is not JSON. */
JsonNode *df_admin_get (const char *host, guint16 port, const char *path,
                        GError **err);

/* GET /v1/health (TCP, no token). */
struct DfAdminHealth {
  char *status;         /* "ok" when healthy */
  gint64 sessions;      /* -1 when not said */
  char *version;        /* streamsvc version, or NULL */
  char *farm;           /* UUID of the farm it serves, NULL when not said
                         * (a streamsvc older than the farm identity) */
  char *instance;       /* id of the streamsvc process, NULL when not said */
};
void df_admin_health_free (DfAdminHealth *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfAdminHealth, df_admin_health_free)
/* New DfAdminHealth, or NULL + err (df_admin_get's, or DF_ERROR_INVALID
 * when the answer is not a JSON object). */
DfAdminHealth *df_admin_health (const char *host, guint16 port, GError **err);

/* df_admin_health on a worker thread, for callers that run a main loop
 * (bootstrapsvc's health rounds): done runs on the thread-default main
 * context of the caller; get the result with df_admin_health_finish.
 * When cancel is cancelled, done runs at once with G_IO_ERROR_CANCELLED
 * and the request, still bounded by DF_ADMIN_TIMEOUT_S, is dropped. */
void df_admin_health_async (const char *host, guint16 port,
                            GCancellable *cancel, GAsyncReadyCallback done,
                            gpointer data);
/* New DfAdminHealth, or NULL + err as df_admin_health. */
DfAdminHealth *df_admin_health_finish (GAsyncResult *res, GError **err);

/* GET /v1/sessions: the JSON array (new node), or NULL + err
 * (DF_ERROR_INVALID when the answer is not an array). */
JsonNode *df_admin_sessions (const char *host, guint16 port, GError **err);

/* Members of an answer, of the expected JSON type or else absent (a
 * server of another version may lack them or type them otherwise):
 * a new string or NULL; the integer or absent; the boolean or absent. */
char *df_json_member_str (JsonObject *o, const char *name);
gint64 df_json_member_int (JsonObject *o, const char *name, gint64 absent);
bool df_json_member_bool (JsonObject *o, const char *name, bool absent);

/* ---- file download (store sync) ---------------------------------------- */

/* Called after each chunk: bytes in the file so far, its total size (-1
 * while unknown). */
typedef void (*DfAdminProgress) (gint64 done, gint64 total, gpointer data);

/* GET <path> of ep (its bearer token over TCP) into fd, appending from
 * offset (the bytes
 * already there: a Range request; a server that answers 200 instead gets
 * the file rewritten from 0, and 416 means nothing is missing).  No
 * whole-request deadline (files are large) but DF_ADMIN_IO_TIMEOUT_S per
 * read; at most bwlimit bytes per second when bwlimit > 0.  *size
 * receives the file's length on success.  DF_ERROR_IO when the server
 * cannot be reached or the transfer breaks (the bytes written stay: run
 * again to resume), DF_ERROR_NOT_FOUND for 404, DF_ERROR_INVALID for
 * another status (its text in the message). */
#define DF_ADMIN_IO_TIMEOUT_S 30
bool df_admin_download (const DfAdminEndpoint *ep, const char *path,
                        int fd, gint64 offset, guint64 bwlimit,
                        DfAdminProgress progress, gpointer data,
                        gint64 *size, GError **err);
