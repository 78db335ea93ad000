/* streamsvc: live sessions and metrics (read by the admin HTTP server).
 *
 * Counters are updated by worker threads with atomics; the session list is
 * protected by one mutex taken only at session start/end and by readers.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "exports.h" /* DfExportBinding */

typedef struct DfSessions DfSessions;
typedef struct DfSession DfSession;

typedef enum {
  DF_OP_READ, DF_OP_WRITE, DF_OP_FLUSH, DF_OP_TRIM, DF_OP_ZERO,
  DF_OP_BLOCK_STATUS, DF_OP__COUNT
} DfOp;

DfSessions *df_sessions_new (void);
void df_sessions_free (DfSessions *s);

/* proto: "nbd" or "iscsi"; client: "127.0.0.1:4242" or "unix".
 * The session starts without an export; set it when negotiated. */
DfSession *df_session_start (DfSessions *s, const char *proto,
                             const char *client);
void df_session_set_export (DfSession *ss, const char *export_name,
                            const char *device /* nullable */);
/* What the session is bound to (copied); call after set_export. */
void df_session_set_binding (DfSession *ss, const DfExportBinding *b);
/* Account one finished block-layer call (bytes moved, latency in ns,
 * error 0/1).  On the data path only the accounting layer calls it
 * (layer_account.h), for NBD and iSCSI alike. */
void df_session_account (DfSession *ss, DfOp op, uint64_t bytes,
                         uint64_t latency_ns, bool failed);
/* Count one ENOSPC from a quota (metric diskfarm_quota_refusals_total). */
void df_session_quota_hit (DfSession *ss);
void df_session_end (DfSession *ss);

/* JSON array of sessions: id, proto, client, export, device (null for
 * vdisk exports), generation (int; null for vdisk exports), vdisk,
 * version (int), cache (mode string; null for vdisk exports), maintenance
 * (bool), started, bytes_read, bytes_written, ops.  Binding fields are null
 * until the export is negotiated.  cache_bytes filled by the caller. */
JsonNode *df_sessions_to_json (DfSessions *s);
/* Append Prometheus text (ops, bytes, latency histogram per export). */
void df_sessions_metrics (DfSessions *s, GString *out);
guint df_sessions_count (DfSessions *s);
/* Bytes read and written by every session since start (live and ended). */
uint64_t df_sessions_bytes_total (DfSessions *s);

/* Prometheus label value escaping (\\, \", \n) for the exposition format.
 * Appends the escaped value, without quotes, to out. */
void df_prom_append_escaped (GString *out, const char *value);
/* The "# HELP" and "# TYPE" lines that open metric family name. */
void df_prom_family_header (GString *out, const char *name, const char *type,
                            const char *help);
