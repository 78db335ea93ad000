/* streamsvc: admin HTTP server (libsoup 3) on the main thread's GLib loop.
 *
 *   GET /v1/health    {"status":"ok","sessions":N,"version":"...",
 *                      "instance":"<random id of this process>",
 *                      "farm":"<farm UUID>"}
 *   GET /v1/sessions  JSON array of live sessions (+ cache_bytes)
 *   GET /metrics      Prometheus text exposition format 0.0.4
 * Other paths 404, methods other than GET/HEAD 405.  Over TCP everything
 * but /metrics and /v1/health needs the farm's bearer token, over the
 * UNIX socket nothing does (admin_auth.h: the one access rule).
 */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "common.h"
#include "exports.h"
#include "sessions.h"

typedef struct DfAdmin DfAdmin;

/* Mode of the admin UNIX socket: the farm's group may connect. */
#define DF_ADMIN_SOCKET_MODE 0660

typedef struct
{
  const char *token;  /* bearer token of TCP clients (borrowed, copied) */
  uid_t socket_owner; /* the UNIX socket's owner (the farm's, so the
                       * dropped process can remove it), (uid_t)-1: as
                       * created */
  gid_t socket_group; /* the UNIX socket's group, (gid_t)-1: as created */
} DfAdminAccess;

/* Listen on every addrs[i] (host:port, wildcard when host is NULL, or
 * unix:PATH: at most one, made DF_ADMIN_SOCKET_MODE, socket_owner's in
 * socket_group, its
 * directory created when missing) and serve from ctx (NULL: the global
 * default context), which the caller runs.  sessions and exports are
 * borrowed and must outlive the DfAdmin; exports may be NULL (no cache
 * figures).  Returns a new server or NULL + err (DF_ERROR_IO,
 * DF_ERROR_INVALID). */
DfAdmin *df_admin_start (const DfListenAddr *addrs, gsize n_addrs,
                         const DfAdminAccess *access, DfSessions *sessions,
                         DfExports *exports, GMainContext *ctx, GError **err);
/* Whether a server answers on the UNIX socket at path now. */
bool df_admin_socket_in_use (const char *path);

/* Stop listening and free. */
void df_admin_stop (DfAdmin *a);

/* The TCP port actually bound (useful with port 0), 0 for unix sockets. */
guint16 df_admin_port (DfAdmin *a);
