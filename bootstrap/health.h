/* diskfarm bootstrap: the health of this bootstrap server's view.
 *
 * Every interval the stream servers are re-read from the farm DB (which
 * also proves the DB readable) and each is asked GET
 * http://address:admin_port/v1/health through lib/admin's client (on a
 * worker thread, DF_ADMIN_TIMEOUT_S for the whole request).  A server is healthy when it answered 200 with "status":"ok";
 * its load is sessions / power.  Results are cached until the next round,
 * so a boot storm costs no extra health requests. */
#pragma once

#include "farm.h"

#include <glib.h>
#include <stdbool.h>

typedef struct DfHealth DfHealth;

/* One stream server as last seen (copies; df_server_view_free). */
typedef struct {
  char *name;
  char *address;            /* its own: where its health is asked */
  char *iscsi_address;      /* what boot scripts name: its floating
                             * portal, else address */
  guint16 iscsi_port;
  guint16 nbd_port;
  guint16 admin_port;       /* its admin API (probes; offline generations) */
  int power;
  bool healthy;             /* probe answered ok and the registry does
                             * not call it unhealthy */
  DfServerState registry;   /* registry state at the last round (a row no
                             * server registered under: never-seen, the
                             * probe alone decides) */
  gint64 sessions;          /* from /v1/health, -1 when unknown */
  char *error;              /* why unhealthy, or NULL */
} DfServerView;
void df_server_view_free (DfServerView *v);

/* Poll through farm (borrowed; must outlive the DfHealth) every
 * interval_ms on the thread-default main context; first round now. */
DfHealth *df_health_new (DfFarm *farm, guint interval_ms);
void df_health_free (DfHealth *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfHealth, df_health_free)

/* Farm DB readable at the last round and at least one server healthy.
 * *why (nullable) receives a static reason when not. */
bool df_health_ok (DfHealth *h, const char **why);
/* Healthy servers, least loaded first (new array of DfServerView). */
GPtrArray *df_health_healthy (DfHealth *h);
/* Number of finished health rounds (tests wait for the first). */
guint df_health_rounds (DfHealth *h);

/* Sort helper shared with the unit test: least loaded first (sessions /
 * power), then by name.  Unhealthy servers last. */
gint df_server_view_compare (gconstpointer a, gconstpointer b);
