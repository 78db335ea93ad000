/* streamsvc --relay: the stream servers a relay reads from
 * (relay_upstream.h). */
#define G_LOG_DOMAIN "streamsvc"

#include "relay_upstream.h"

#include <string.h>

#include "common.h"
#include "farm.h"

typedef struct
{
  char *host;
  char *port;
  gint64 down_until_ms; /* 0: up */
} Upstream;

struct DfRelayUpstreams
{
  GMutex lock;
  GPtrArray *list;    /* Upstream*, owned; under lock */
  DfFarm *farm;       /* registry mode: owned, used under lock; else NULL */
  gint64 refreshed_ms;
  guint next;         /* round robin */
};

static void
upstream_free (gpointer p)
{
  Upstream *u = p;

  g_free (u->host);
  g_free (u->port);
  g_free (u);
}

static Upstream *
upstream_new (const char *host, guint16 port)
{
  Upstream *u = g_new0 (Upstream, 1);

  u->host = g_strdup (host);
  u->port = g_strdup_printf ("%u", port);
  return u;
}

static DfRelayUpstreams *
upstreams_alloc (void)
{
  DfRelayUpstreams *u = g_new0 (DfRelayUpstreams, 1);

  g_mutex_init (&u->lock);
  u->list = g_ptr_array_new_with_free_func (upstream_free);
  return u;
}

DfRelayUpstreams *
df_relay_upstreams_new_fixed (char **addrs, GError **err)
{
  g_autoptr (GPtrArray) list = g_ptr_array_new_with_free_func (upstream_free);
  DfRelayUpstreams *u;

  for (char **a = addrs; a != NULL && *a != NULL; a++)
    {
      DfListenAddr la = { 0 };

      if (!df_parse_listen (*a, 0, &la, err) || la.host == NULL
          || la.port == 0)
        {
          df_listen_addr_clear (&la);
          g_clear_error (err);
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "--upstream '%s': HOST:PORT of a stream server's "
                       "NBD listener expected", *a);
          return NULL;
        }
      g_ptr_array_add (list, upstream_new (la.host, la.port));
      df_listen_addr_clear (&la);
    }
  u = upstreams_alloc ();
  g_ptr_array_extend_and_steal (u->list, g_steal_pointer (&list));
  return u;
}

/* Replace the list by the registry's healthy stream servers, keeping the
 * down marks of those still there.  Caller holds the lock.  A failed read
 * keeps the old list (logged). */
static void
refresh_locked (DfRelayUpstreams *u)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) rows = NULL;
  gint64 now = df_farm_now_ms ();
  GPtrArray *fresh;

  if (u->farm == NULL || now - u->refreshed_ms < DF_RELAY_REGISTRY_REFRESH_MS)
    return;
  u->refreshed_ms = now;
  rows = df_farm_server_list (u->farm, &err);
  if (rows == NULL)
    {
      g_warning ("relay: registry: %s (keeping %u known servers)",
                 err->message, u->list->len);
      return;
    }
  fresh = g_ptr_array_new_with_free_func (upstream_free);
  for (guint i = 0; i < rows->len; i++)
    {
      const DfServer *s = g_ptr_array_index (rows, i);

      if (g_strcmp0 (s->kind, DF_SERVER_KIND_STREAM) != 0 || s->nbd_port == 0
          || df_server_state (s, now) != DF_SERVER_HEALTHY)
        continue;
      Upstream *n = upstream_new (s->address, s->nbd_port);
      for (guint j = 0; j < u->list->len; j++)
        {
          const Upstream *o = g_ptr_array_index (u->list, j);
          if (strcmp (o->host, n->host) == 0 && strcmp (o->port, n->port) == 0)
            n->down_until_ms = o->down_until_ms;
        }
      g_ptr_array_add (fresh, n);
    }
  g_ptr_array_unref (u->list);
  u->list = fresh;
}

DfRelayUpstreams *
df_relay_upstreams_new_registry (const char *farm_dir, const char *db,
                                 GError **err)
{
  DfFarm *farm = df_farm_open_db (farm_dir, db, false, "streamsvc-relay",
                                  err);
  DfRelayUpstreams *u;

  if (farm == NULL)
    return NULL;
  u = upstreams_alloc ();
  u->farm = farm;
  g_mutex_lock (&u->lock);
  refresh_locked (u);
  g_mutex_unlock (&u->lock);
  return u;
}

void
df_relay_upstreams_free (DfRelayUpstreams *u)
{
  if (u == NULL)
    return;
  g_ptr_array_unref (u->list);
  if (u->farm != NULL)
    df_farm_close (u->farm);
  g_mutex_clear (&u->lock);
  g_free (u);
}

static bool
upstream_is (const Upstream *s, const char *host, const char *port)
{
  return strcmp (s->host, host) == 0 && strcmp (s->port, port) == 0;
}

/* The index of the first server at or after start that is up (any one
 * when all are down).  Caller holds the lock; list not empty. */
static guint
first_up_locked (DfRelayUpstreams *u, guint start, gint64 now)
{
  for (guint i = 0; i < u->list->len; i++)
    {
      guint j = (start + i) % u->list->len;
      const Upstream *s = g_ptr_array_index (u->list, j);

      if (s->down_until_ms <= now)
        return j;
    }
  return start % u->list->len;
}

/* The index of the server "host:port" in u's list, or -1. */
static gint
index_of_locked (DfRelayUpstreams *u, const char *where)
{
  for (guint i = 0; where != NULL && i < u->list->len; i++)
    {
      const Upstream *o = g_ptr_array_index (u->list, i);
      g_autofree char *hp = g_strdup_printf ("%s:%s", o->host, o->port);
      if (strcmp (hp, where) == 0)
        return (gint) i;
    }
  return -1;
}

bool
df_relay_upstreams_pick (DfRelayUpstreams *u, const char *after,
                         const char *prefer, char **host, char **port)
{
  gint64 now = df_farm_now_ms ();
  guint start;
  gint at;
  const Upstream *s;

  g_mutex_lock (&u->lock);
  refresh_locked (u);
  if (u->list->len == 0)
    {
      g_mutex_unlock (&u->lock);
      return false;
    }
  start = u->next++;
  if ((at = index_of_locked (u, prefer)) >= 0
      && ((const Upstream *) g_ptr_array_index (u->list, (guint) at))
                 ->down_until_ms <= now)
    start = (guint) at;
  else if ((at = index_of_locked (u, after)) >= 0)
    start = (guint) at + 1;
  s = g_ptr_array_index (u->list, first_up_locked (u, start, now));
  *host = g_strdup (s->host);
  *port = g_strdup (s->port);
  g_mutex_unlock (&u->lock);
  return true;
}

void
df_relay_upstreams_mark_down (DfRelayUpstreams *u, const char *host,
                              const char *port)
{
  g_mutex_lock (&u->lock);
  for (guint i = 0; i < u->list->len; i++)
    {
      Upstream *s = g_ptr_array_index (u->list, i);

      if (upstream_is (s, host, port))
        s->down_until_ms = df_farm_now_ms () + DF_RELAY_DOWN_MS;
    }
  g_mutex_unlock (&u->lock);
}
