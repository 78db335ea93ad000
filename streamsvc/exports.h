/* streamsvc: export names -> opened block stacks.
 *
 *   vdisk/<name>        read-only, newest production version
 *   vdisk/<name>@<N>    read-only, version N
 *   device/<name>       writable: the device's write cache over the version
 *   device/<mac>          its type selects (production/test/maintenance)
 *                       (cache mode hypervisor: that version's chain itself,
 *                       read-only; the hypervisor's overlay takes the writes)
 *
 * The registry keeps one chain per (vdisk, version) and one cache entry per
 * device, shared by every session that opens it.  A session is bound at
 * open to the entry's binding: (device, boot generation, device type,
 * vdisk, version, cache mode, maintenance cache or not).  The entry is
 * reused only while that whole binding is what the farm DB says now (the
 * version counts for maintenance devices only: production and test devices
 * keep the version their boot generation pinned until the next boot).
 * Otherwise the next open fences the old entry's sessions, waits for their
 * requests in flight, releases the old cache (flushed) and opens a new one:
 * a newer boot generation always takes over, in every cache mode.
 *
 * Fencing (blk_fence.h) is one layer under both front ends: every device
 * export's blk is a fence layer over the entry's cache.  A background check
 * (every 0.5 s, once per live entry) and a synchronous check after every
 * FLUSH and FUA write trip the fence when the binding went stale (device
 * reset, set --vdisk/--type/--cache, removed, a new maintenance version):
 * from then on every request fails with ESHUTDOWN and the connection's
 * socket is shut down (df_export_shutdown_when_fenced).  Non-persistent
 * caches stay in the registry between sessions of the same binding (a
 * target reconnecting keeps its writes).
 *
 * Thread safety: all functions may be called from any worker thread.
 */
#pragma once

#include <glib.h>
#include "vdisk.h"
#include "farm.h" /* DfChap */

typedef struct DfExports DfExports;
typedef struct DfExport DfExport;

/* Export name grammar, checked before any farm access (also used by the
 * unit tests).  "vdisk/<name>", "vdisk/<name>@<N>" (N decimal, no sign, no
 * leading zero, <= INT_MAX), "device/<name>" or "device/<mac>".  On success
 * *object receives a new string (vdisk name, device name or MAC as given)
 * and *version the number or -1.  Anything else: DF_ERROR_NOT_FOUND
 * "unknown export 'X'". */
typedef enum { DF_EXPORT_KIND_VDISK, DF_EXPORT_KIND_DEVICE } DfExportKind;
bool df_export_name_parse (const char *name, DfExportKind *kind,
                           char **object, int *version, GError **err);

/* farm_dir must hold an initialised farm; db is its DB (NULL: the
 * directory's farm.db; see df_farm_open_db). */
DfExports *df_exports_new (const char *farm_dir, const char *db,
                           GError **err);
/* Exports that are not the farm's (the relay, relay.h): open gives the
 * blk of a name the grammar above accepted (a new ref) and *description
 * (a new string), or NULL + err (codes as df_exports_open).  opaque is
 * borrowed and outlives the DfExports.  Such exports have no device
 * binding (never fenced); NBD_OPT_LIST lists none; farm_uuid is NULL. */
typedef struct
{
  df_blk *(*open) (void *opaque, const char *name, char **description,
                   GError **err);
  void *opaque;
} DfExportSource;
DfExports *df_exports_new_source (const DfExportSource *src);

/* What NBD_INFO_DESCRIPTION ends with when the export serves a sealed
 * version as it is (vdisk exports; device exports that are read-only,
 * cache mode hypervisor): this then the file's SHA-256 (64 hex).  The
 * relay keys its read cache by it (relay.h). */
#define DF_EXPORT_DESC_SHA256 " sha256:"

/* The UUID of the farm served (df_farm_uuid), borrowed. */
const char *df_exports_farm_uuid (DfExports *ex);
/* This server's registry name (copied; set once at start, before any
 * open): versions its store state calls missing or corrupt are refused. */
void df_exports_set_server (DfExports *ex, const char *server);
/* Tier 2 (issue 13): keep server-persistent device caches in
 * dir/<device>/, on storage every server of the farm reaches, each under
 * a cache lease of ttl_ms (leases.h) instead of a flock; a session whose
 * device's lease another server holds waits for it (bounded) or is
 * refused naming that server.  Needs df_exports_set_server first; set
 * once at start.  Server and ram caches of a server with a name are
 * recorded as local to it (tier 3): another server serves that boot
 * generation a lost cache (every request EIO), never an empty one. */
void df_exports_set_shared_caches (DfExports *ex, const char *dir,
                                   gint64 ttl_ms);
/* Prometheus lines of the cache leases and lost local caches. */
void df_exports_metrics (DfExports *ex, GString *out);
/* Path of the file of vdisk@number when this server may hand it out
 * (whole, to a peer's store sync): a sealed version, not refused as
 * above.  New string or NULL + err. */
char *df_exports_version_file (DfExports *ex, const char *vdisk, int number,
                               GError **err);
/* Offline mode (farm.h "offline boot generations"): a bootstrap server
 * gave device generation while the farm DB is unreachable; journal it
 * here, so this server opens that generation (a fresh cache).
 * DF_ERROR_BUSY when the DB answers; else as
 * df_farm_offline_generation_note. */
bool df_exports_offline_generation (DfExports *ex, const char *device,
                                    gint64 generation, GError **err);
/* The server is stopping: the sessions that close from now on do not end
 * their local caches' use (the OS is still running; see "live marks" in
 * exports.c), so a restart of this server refuses those generations. */
void df_exports_stopping (DfExports *ex);
/* Flush every persistent cache (SIGTERM path) then free.  Sessions must be
 * closed first. */
void df_exports_free (DfExports *ex);

/* Open an export by name.  Errors: DF_ERROR_NOT_FOUND (message names the
 * export), DF_ERROR_INVALID (malformed name), DF_ERROR_BUSY, DF_ERROR_IO.
 * Returns a new handle; close with df_export_close. */
DfExport *df_exports_open (DfExports *ex, const char *name, GError **err);
/* As df_exports_open, but a maintenance device's session already open
 * (one writer at a time: DF_ERROR_BUSY above) is replaced: its sessions
 * are fenced and drained, then the new one opens.  For a front end that
 * knows the new session comes from the client of the old one (iSCSI: the
 * same InitiatorName, the machine's firmware or its boot before a reset,
 * whose connection nothing closed). */
DfExport *df_exports_open_replacing (DfExports *ex, const char *name,
                                     GError **err);
void df_export_close (DfExport *e);

df_blk *df_export_blk (DfExport *e);          /* borrowed */
const char *df_export_name (DfExport *e);     /* as requested */
const char *df_export_device (DfExport *e);   /* device name or NULL */
bool df_export_readonly (DfExport *e);
/* What a session of e is bound to (borrowed strings, valid while e). */
typedef struct
{
  const char *device; /* NULL for vdisk exports */
  gint64 generation;  /* boot generation; -1 for vdisk exports */
  const char *vdisk;
  int version;
  const char *cache;  /* cache mode string ("server", "ram:64", ...); NULL
                       * for vdisk exports */
  bool maintenance;   /* writes go to the maintenance version's cache */
} DfExportBinding;
void df_export_binding (DfExport *e, DfExportBinding *out);
/* NULL while e's binding is current; once fenced, why (borrowed).  One
 * atomic load. */
const char *df_export_fence_reason (DfExport *e);
/* Fenced because this server lost the lease of e's shared cache
 * (df_fence_moved): the device carries on at the server that takes it
 * over, so a client should retry there rather than fail the I/O. */
bool df_export_moved (DfExport *e);
/* When e is fenced, shutdown(fd, SHUT_RD) so that the front end's worker
 * drops the connection, idle or not (a reply being sent goes out first).  At most once per export;
 * df_export_close stops watching (call it before closing fd).  No-op for
 * vdisk exports. */
void df_export_shutdown_when_fenced (DfExport *e, int fd);
/* Start the change watch (watch.h: PostgreSQL LISTEN/NOTIFY, and offline
 * mode's local snapshot) that wakes the binding checker; a no-op on
 * SQLite.  Once, when the daemon is up (after the privilege drop). */
void df_exports_watch (DfExports *ex);
/* Check the binding of every live device cache against the farm now and
 * fence the stale ones (a background thread does this periodically). */
void df_exports_check (DfExports *ex);
/* Short human description for NBD_INFO_DESCRIPTION ("vdisk base v3"). */
const char *df_export_description (DfExport *e);

/* Names for NBD_OPT_LIST: "vdisk/<name>" for each vdisk (never devices).
 * Newly allocated NULL-terminated array (g_strfreev). */
char **df_exports_list (DfExports *ex, GError **err);

/* Flush all persistent caches (called on SIGTERM). */
void df_exports_flush_all (DfExports *ex);

/* For metrics: call fn for each live device cache. */
typedef void (*df_cache_visit_fn) (void *opaque, const char *device,
                                   const char *mode, const DfCacheStats *st);
void df_exports_foreach_cache (DfExports *ex, df_cache_visit_fn fn,
                               void *opaque);

/* ---- NBD TLS ---------------------------------------------------------------- */

/* May a TLS session whose identity (PSK identity or certificate CN) is
 * identity open name?  Every vdisk/ name, and device/<identity> or
 * device/<MAC of the device named identity>; nothing else (identity NULL:
 * vdisk names only).  Decided from the name and the identity's own device
 * only, so the answer never tells which other names exist.
 * DF_ERROR_DENIED "export 'X' is not open to TLS identity 'Y'". */
bool df_exports_authorize (DfExports *ex, const char *name,
                           const char *identity, GError **err);
/* The farm's NBD pre-shared key of the device named identity, as a
 * DfTlsPskLookup (tls.h; opaque is ex): key receives the bytes. */
bool df_exports_nbd_psk (void *ex, const char *identity, uint8_t *key,
                         size_t *len);
/* The farm setting nbd-tls (df_farm_nbd_tls_get). */
bool df_exports_nbd_tls (DfExports *ex, DfTlsMode *mode, bool *set,
                         GError **err);

/* ---- iSCSI (added by the iSCSI front end) ---------------------------------- */

/* CHAP credentials for an export name: "device/<name|mac>" -> that
 * device's (fields NULL when it has none); "vdisk/..." -> a DfChap with
 * all fields NULL.  DF_ERROR_NOT_FOUND for an unknown device.  New
 * DfChap (df_chap_free wipes the secrets). */
DfChap *df_exports_chap (DfExports *ex, const char *export_name,
                         GError **err);
/* The device whose CHAP user is user (discovery sessions). */
DfChap *df_exports_chap_by_user (DfExports *ex, const char *user,
                                 GError **err);
/* Export names an initiator may reach, for SendTargets: every device
 * without CHAP (none when the farm's iscsi-chap policy is required), the
 * device of chap_user (nullable) and every vdisk ("vdisk/<name>").  New NULL-terminated array (g_strfreev). */
char **df_exports_iscsi_visible (DfExports *ex, const char *chap_user,
                                 GError **err);
