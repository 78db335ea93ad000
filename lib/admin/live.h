/* diskfarm: the live sessions of a farm, as its stream servers report them.
 *
 * Every server of the farm's server table (address + admin_port, over TCP
 * with the farm's admin token) is asked, plus one extra admin address (the
 * console's --admin; by default the farm's admin socket on this host,
 * df_admin_socket_path), without duplicates; a server reached through two
 * of them (same /v1/health "instance") counts once.  A server counts only when
 * its /v1/health says it serves this farm ("farm" == df_farm_uuid): a
 * server of another farm, or one that does not say (an older streamsvc),
 * is set aside in DfLive.foreign and its sessions are never counted.
 * Servers that cannot be asked go to DfLive.unreachable; neither is fatal.
 * The servers are asked at the same time (a small thread pool, each
 * request bounded by DF_ADMIN_TIMEOUT_S).
 *
 * The rule "no change to a live device without --force" lives here too
 * (df_live_refuse), so every command words it the same way.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>

#include "admin-client.h"
#include "farm.h"

/* One session.  Fields a server does not report are NULL / -1 / false
 * (older servers report neither generation, vdisk, version nor cache). */
typedef struct {
  char *server;         /* the farm's name for the server, or NULL for the
                         * extra address when it is not in the table */
  char *address;        /* "host:port" or "unix:PATH" of the API asked */
  gint64 id;
  char *proto;          /* "nbd", "iscsi" */
  char *client;         /* peer address */
  char *export;         /* export name, or NULL */
  char *device;         /* device name, or NULL (vdisk exports) */
  gint64 generation;    /* boot generation bound, -1 unknown */
  char *vdisk;
  gint64 version;       /* version number bound, -1 unknown */
  char *cache;          /* cache mode bound */
  bool maintenance;     /* bound to the maintenance version */
  char *started;        /* ISO 8601 */
  gint64 bytes_read, bytes_written;
} DfLiveSession;

/* A server whose sessions are not counted, and why. */
typedef struct {
  char *server;         /* name in the table, or NULL */
  char *address;        /* "host:port" or "unix:PATH" */
  char *reason;         /* one line */
} DfLiveSkip;

typedef struct {
  GPtrArray *sessions;     /* DfLiveSession, by server then session id */
  GPtrArray *unreachable;  /* DfLiveSkip: could not be asked */
  GPtrArray *foreign;      /* DfLiveSkip: another farm's, or unknown farm */
  guint answered;          /* servers of this farm that answered */
} DfLive;

void df_live_free (DfLive *live);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfLive, df_live_free)

/* Ask every server of farm, plus extra_admin ("HOST:PORT", "unix:PATH";
 * NULL: the farm's admin socket).
 * New DfLive, or NULL + err only when the server table cannot be read or
 * extra_admin is malformed (DF_ERROR_INVALID). */
DfLive *df_live_collect (DfFarm *farm, const char *extra_admin, GError **err);

/* "server s1 (127.0.0.1:8001, session 7, nbd from 127.0.0.1:5555)"; a
 * server not in the table is named by its address.  New string. */
char *df_live_session_describe (const DfLiveSession *s);

/* The sessions (borrowed, in live's order) of device d: those whose
 * "device" is its name or its MAC.  New array (no free function). */
GPtrArray *df_live_device_sessions (const DfLive *live, const DfDevice *d);

/* No server could be asked at all: live sessions are unknown. */
bool df_live_unknown (const DfLive *live);

/* The rule for changes that would pull a device's disk from under it:
 * false + DF_ERROR_BUSY "device m1 is live on server s1 (...): stop it
 * first or use --force" when d has a session and !force; true otherwise.
 * what prefixes the message when non-NULL ("vdisk win10: maintenance "). */
bool df_live_refuse (const DfLive *live, const DfDevice *d, bool force,
                     const char *what, GError **err);
