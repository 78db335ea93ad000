/* streamsvc: admin HTTP server (libsoup 3) on the main thread's GLib loop.
 *
 *   GET /v1/health    {"status":"ok","sessions":N,"version":"...",
 *                      "farm":"<farm UUID>"}
 *   GET /v1/sessions  JSON array of live sessions (+ cache_bytes)
 *   GET /metrics      Prometheus text exposition format 0.0.4
 * Other paths 404, methods other than GET/HEAD 405.
 */
#pragma once

#include <glib.h>

#include "common.h"
#include "exports.h"
#include "sessions.h"

typedef struct DfAdmin DfAdmin;

/* Listen on addr (host:port, wildcard when host is NULL, or unix:PATH) and
 * serve from ctx (NULL: the global default context), which the caller
 * runs.  sessions and exports are borrowed and must outlive the DfAdmin;
 * exports may be NULL (no cache figures).  Returns a new server or
 * NULL + err (DF_ERROR_IO, DF_ERROR_INVALID). */
DfAdmin *df_admin_start (const DfListenAddr *addr, DfSessions *sessions,
                         DfExports *exports, GMainContext *ctx, GError **err);
/* Stop listening and free. */
void df_admin_stop (DfAdmin *a);

/* The TCP port actually bound (useful with port 0), 0 for unix sockets. */
guint16 df_admin_port (DfAdmin *a);
