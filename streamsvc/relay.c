/* streamsvc --relay: exports whose requests go upstream (relay.h). */
#define G_LOG_DOMAIN "streamsvc"

#include "relay.h"

#include <errno.h>
#include <libnbd.h>
#include <string.h>

#include "common.h"
#include "exports.h"

#define RETRY_PAUSE_US (200 * 1000) /* between rounds of the servers */
#define DISCONNECT_MS 1000

struct DfRelay
{
  DfRelayUpstreams *up;  /* owned */
  DfRelayCache *cache;   /* owned, NULL: no read cache */
  guint stall_s;
  guint timeout_s;
  GMutex stats_lock;
  DfRelayStats st;       /* under stats_lock (cache: see cache) */
  /* Writable exports stay on the server that served them ("host:port",
   * under stats_lock): their write cache lives there (a `server` cache
   * on another server is a lost cache, issue 13 tier 3). */
  GHashTable *home;      /* export name -> "host:port" (owned strings) */
};

/* One export opened through the relay: one upstream connection at a time. */
typedef struct
{
  df_blk blk;
  DfRelay *relay;        /* borrowed: outlives its exports */
  char *name;
  char *key;             /* the version hash (read cache), or NULL */
  GMutex lock;           /* the fields below */
  struct nbd_handle *h;  /* owned, NULL: to connect */
  char *where;           /* "host:port" of h, or of the last one */
  bool broken;           /* writable and its upstream died: EIO */
} RelayBlk;

typedef enum { OP_READ, OP_WRITE, OP_FLUSH, OP_TRIM, OP_ZERO } OpKind;

typedef struct
{
  OpKind kind;
  void *buf;
  uint32_t count;
  uint64_t offset;
  uint32_t flags; /* libnbd LIBNBD_CMD_FLAG_* */
} Op;

static const char *const op_names[] = { "read", "write", "flush", "trim",
                                        "zero" };

/* ---- one upstream connection ------------------------------------------- */

static gint64
ms_left (gint64 deadline_us)
{
  return (deadline_us - g_get_monotonic_time ()) / 1000;
}

/* Close h, saying goodbye (NBD_CMD_DISC) when it is still up.  NULL ok. */
static void
upstream_close (struct nbd_handle *h)
{
  gint64 deadline = g_get_monotonic_time () + DISCONNECT_MS * 1000;

  if (h == NULL)
    return;
  if (nbd_aio_is_ready (h) && nbd_aio_disconnect (h, 0) == 0)
    while (!nbd_aio_is_closed (h) && !nbd_aio_is_dead (h)
           && ms_left (deadline) > 0
           && nbd_poll (h, (int) ms_left (deadline)) > 0)
      ;
  nbd_close (h);
}

/* libnbd's last error on this thread as a GError (ENOENT: NOT_FOUND). */
static void
set_nbd_error (GError **err, const char *name, const char *where)
{
  int e = nbd_get_errno ();
  const char *msg = nbd_get_error ();

  g_set_error (err, DF_ERROR,
               e == ENOENT || e == EINVAL ? DF_ERROR_NOT_FOUND : DF_ERROR_IO,
               "export '%s' upstream %s: %s", name, where,
               msg ? msg : g_strerror (e ? e : EIO));
}

/* Connect to name on host:port, negotiated by deadline_us.  New handle or
 * NULL + err. */
static struct nbd_handle *
upstream_connect (const char *name, const char *host, const char *port,
                  gint64 deadline_us, GError **err)
{
  struct nbd_handle *h = nbd_create ();
  g_autofree char *where = g_strdup_printf ("%s:%s", host, port);

  if (h == NULL || nbd_set_export_name (h, name) == -1
      || nbd_set_full_info (h, true) == -1
      || nbd_aio_connect_tcp (h, host, port) == -1)
    goto fail;
  while (nbd_aio_is_connecting (h))
    {
      if (ms_left (deadline_us) <= 0)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_IO,
                       "export '%s' upstream %s: no answer", name, where);
          nbd_close (h);
          return NULL;
        }
      if (nbd_poll (h, (int) ms_left (deadline_us)) == -1)
        goto fail;
    }
  if (nbd_aio_is_ready (h))
    return h;
fail:
  set_nbd_error (err, name, where);
  if (h != NULL)
    nbd_close (h);
  return NULL;
}

/* The version hash at the end of an export's description, or NULL (new
 * string). */
static char *
description_hash (const char *desc)
{
  const char *p = desc ? strstr (desc, DF_EXPORT_DESC_SHA256) : NULL;

  if (p == NULL)
    return NULL;
  p += strlen (DF_EXPORT_DESC_SHA256);
  if (strlen (p) != 64 || strspn (p, "0123456789abcdef") != 64)
    return NULL;
  return g_strdup (p);
}

/* The upstream's description (new string, "" when it gave none). */
static char *
upstream_description (struct nbd_handle *h)
{
  char *d = nbd_get_export_description (h);

  return d != NULL ? d : g_strdup ("");
}

/* Does h serve what rb served (size, writability, version hash)? */
static bool
same_content (RelayBlk *rb, struct nbd_handle *h, GError **err)
{
  g_autofree char *desc = upstream_description (h);
  g_autofree char *key = description_hash (desc);
  int64_t size = nbd_get_size (h);

  if (size != (int64_t) rb->blk.size
      || (nbd_is_read_only (h) == 1) != rb->blk.readonly
      || g_strcmp0 (key, rb->key) != 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "serves other content (%" G_GINT64_FORMAT " bytes, %s)",
                   size, desc);
      return false;
    }
  return true;
}

/* ---- failover ------------------------------------------------------------ */

/* Connect rb to a server serving its content, trying them in turn until
 * deadline_us.  Caller holds rb->lock.  false + *err (EIO) when none did. */
static bool
reconnect_locked (RelayBlk *rb, gint64 deadline_us, int *err)
{
  while (ms_left (deadline_us) > 0)
    {
      g_autofree char *host = NULL, *port = NULL;
      g_autoptr (GError) e = NULL;
      struct nbd_handle *h;

      if (!df_relay_upstreams_pick (rb->relay->up, rb->where, NULL, &host,
                                    &port))
        {
          g_usleep (RETRY_PAUSE_US);
          continue;
        }
      g_free (rb->where);
      rb->where = g_strdup_printf ("%s:%s", host, port);
      h = upstream_connect (rb->name, host, port,
                            MIN (deadline_us, g_get_monotonic_time ()
                                 + rb->relay->timeout_s * G_USEC_PER_SEC),
                            &e);
      if (h != NULL && same_content (rb, h, &e))
        {
          rb->h = h;
          return true;
        }
      upstream_close (h);
      g_message ("relay: export %s: upstream %s: %s", rb->name, rb->where,
                 e->message);
      df_relay_upstreams_mark_down (rb->relay->up, host, port);
      g_usleep (RETRY_PAUSE_US);
    }
  g_warning ("relay: export %s: no stream server answered within %u s: EIO",
             rb->name, rb->relay->stall_s);
  *err = EIO;
  return false;
}

static int64_t
op_issue (struct nbd_handle *h, const Op *op)
{
  switch (op->kind)
    {
    case OP_READ:
      return nbd_aio_pread (h, op->buf, op->count, op->offset,
                            NBD_NULL_COMPLETION, 0);
    case OP_WRITE:
      return nbd_aio_pwrite (h, op->buf, op->count, op->offset,
                             NBD_NULL_COMPLETION, op->flags);
    case OP_FLUSH:
      return nbd_aio_flush (h, NBD_NULL_COMPLETION, 0);
    case OP_TRIM:
      return nbd_aio_trim (h, op->count, op->offset, NBD_NULL_COMPLETION,
                           op->flags);
    case OP_ZERO:
      return nbd_aio_zero (h, op->count, op->offset, NBD_NULL_COMPLETION,
                           op->flags);
    }
  g_assert_not_reached ();
}

/* Run op on h and wait for its reply, at most timeout_s.  0, or -1 with
 * *err and *dead (the connection is gone or silent, as opposed to the
 * server's own error reply). */
static int
op_run (struct nbd_handle *h, const Op *op, guint timeout_s, int *err,
        bool *dead)
{
  gint64 deadline = g_get_monotonic_time () + timeout_s * G_USEC_PER_SEC;
  int64_t cookie = op_issue (h, op);

  *dead = false;
  while (cookie != -1)
    {
      int rc = nbd_aio_command_completed (h, cookie);

      if (rc == 1)
        return 0;
      if (rc == -1)
        break;
      if (ms_left (deadline) <= 0)
        {
          *dead = true;
          *err = ETIMEDOUT;
          return -1;
        }
      if (nbd_poll (h, (int) ms_left (deadline)) == -1)
        break;
    }
  *err = nbd_get_errno () ? nbd_get_errno () : EIO;
  *dead = !nbd_aio_is_ready (h) && !nbd_aio_is_processing (h);
  return -1;
}

/* rb's upstream failed (err): drop it; a writable export is broken from
 * now on.  Caller holds rb->lock. */
static void
upstream_lost_locked (RelayBlk *rb, int err)
{
  g_auto (GStrv) hp = g_strsplit (rb->where, ":", 2);

  g_warning ("relay: export %s: upstream %s lost (%s)%s", rb->name,
             rb->where, g_strerror (err),
             rb->blk.readonly ? ": replaying on another server"
                              : ": writable export, its unflushed writes "
                                "were on that server: EIO from now on");
  upstream_close (g_steal_pointer (&rb->h));
  if (hp[0] != NULL && hp[1] != NULL)
    df_relay_upstreams_mark_down (rb->relay->up, hp[0], hp[1]);
  rb->broken = !rb->blk.readonly;
}

static void
note_success (RelayBlk *rb, const Op *op, gint64 failed_at)
{
  DfRelay *r = rb->relay;

  g_mutex_lock (&r->stats_lock);
  if (op->kind == OP_READ)
    r->st.upstream_read_bytes += op->count;
  if (failed_at != 0)
    {
      uint64_t ms = (uint64_t) (g_get_monotonic_time () - failed_at) / 1000;
      r->st.failovers++;
      r->st.stall_max_ms = MAX (r->st.stall_max_ms, ms);
      g_message ("relay: export %s: %s at %" G_GUINT64_FORMAT " replayed on "
                 "%s, stall %" G_GUINT64_FORMAT " ms", rb->name,
                 op_names[op->kind], op->offset, rb->where, ms);
    }
  g_mutex_unlock (&r->stats_lock);
}

/* Run op upstream, on another server when rb's dies, within the stall
 * bound.  0 or -1 + *err. */
static int
relay_call (RelayBlk *rb, const Op *op, int *err)
{
  gint64 failed_at = 0, deadline = 0;
  int rc = -1;
  bool dead;

  g_mutex_lock (&rb->lock);
  for (;;)
    {
      if (rb->broken)
        {
          *err = EIO;
          break;
        }
      if (rb->h == NULL
          && !reconnect_locked (rb, deadline ? deadline
                                : g_get_monotonic_time ()
                                  + rb->relay->stall_s * G_USEC_PER_SEC, err))
        break;
      if (op_run (rb->h, op, rb->relay->timeout_s, err, &dead) == 0)
        {
          note_success (rb, op, failed_at);
          rc = 0;
          break;
        }
      if (!dead)
        break; /* the server's own answer */
      upstream_lost_locked (rb, *err);
      if (failed_at == 0)
        {
          failed_at = g_get_monotonic_time ();
          deadline = failed_at + rb->relay->stall_s * G_USEC_PER_SEC;
        }
    }
  g_mutex_unlock (&rb->lock);
  return rc;
}

/* ---- the df_blk ----------------------------------------------------------- */

static int
fetch_chunk (void *opaque, void *buf, uint32_t count, uint64_t offset,
             int *err)
{
  Op op = { OP_READ, buf, count, offset, 0 };

  return relay_call (opaque, &op, err);
}

static int
relay_pread (df_blk *b, void *buf, uint32_t count, uint64_t offset, int *err)
{
  RelayBlk *rb = (RelayBlk *) b;
  DfRelay *r = rb->relay;
  int rc;

  if (rb->key != NULL && r->cache != NULL)
    rc = df_relay_cache_read (r->cache, rb->key, b->size, buf, count, offset,
                              fetch_chunk, rb, err);
  else
    rc = fetch_chunk (rb, buf, count, offset, err);
  if (rc == 0)
    {
      g_mutex_lock (&r->stats_lock);
      r->st.client_read_bytes += count;
      g_mutex_unlock (&r->stats_lock);
    }
  return rc;
}

static int
relay_pwrite (df_blk *b, const void *buf, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  Op op = { OP_WRITE, (void *) buf, count, offset,
            flags & DF_BLK_FUA ? LIBNBD_CMD_FLAG_FUA : 0 };

  return relay_call ((RelayBlk *) b, &op, err);
}

static int
relay_flush (df_blk *b, int *err)
{
  Op op = { OP_FLUSH, NULL, 0, 0, 0 };

  return relay_call ((RelayBlk *) b, &op, err);
}

static int
relay_trim (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  Op op = { OP_TRIM, NULL, count, offset,
            flags & DF_BLK_FUA ? LIBNBD_CMD_FLAG_FUA : 0 };

  return relay_call ((RelayBlk *) b, &op, err);
}

static int
relay_zero (df_blk *b, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  Op op = { OP_ZERO, NULL, count, offset,
            (flags & DF_BLK_FUA ? LIBNBD_CMD_FLAG_FUA : 0)
                | (flags & DF_BLK_MAY_TRIM ? 0 : LIBNBD_CMD_FLAG_NO_HOLE)
                | (flags & DF_BLK_FAST_ZERO ? LIBNBD_CMD_FLAG_FAST_ZERO : 0) };

  return relay_call ((RelayBlk *) b, &op, err);
}

static void
relay_destroy (df_blk *b)
{
  RelayBlk *rb = (RelayBlk *) b;

  upstream_close (rb->h);
  g_mutex_clear (&rb->lock);
  g_free (rb->name);
  g_free (rb->key);
  g_free (rb->where);
  g_free (rb);
}

static const df_blk_ops relay_ops = {
  .name = "relay",
  .pread = relay_pread,
  .pwrite = relay_pwrite,
  .flush = relay_flush,
  .trim = relay_trim,
  .zero = relay_zero,
  .destroy = relay_destroy,
};

/* The blk over h, connected to name at where (both taken). */
static RelayBlk *
relay_blk_new (DfRelay *r, const char *name, struct nbd_handle *h,
               char *where, const char *desc)
{
  RelayBlk *rb = g_new0 (RelayBlk, 1);

  df_blk_init (&rb->blk, &relay_ops, (uint64_t) nbd_get_size (h),
               nbd_is_read_only (h) == 1);
  rb->blk.can_flush = nbd_can_flush (h) == 1;
  rb->blk.can_trim = !rb->blk.readonly && nbd_can_trim (h) == 1;
  rb->blk.can_zero = !rb->blk.readonly && nbd_can_zero (h) == 1;
  rb->blk.can_fast_zero = rb->blk.can_zero && nbd_can_fast_zero (h) == 1;
  rb->relay = r;
  rb->name = g_strdup (name);
  rb->key = rb->blk.readonly ? description_hash (desc) : NULL;
  g_mutex_init (&rb->lock);
  rb->h = h;
  rb->where = where;
  return rb;
}

/* Export name's home server (a new string, NULL when none); with set,
 * make set its home first. */
static char *
relay_home (DfRelay *r, const char *name, const char *set)
{
  char *home;

  g_mutex_lock (&r->stats_lock);
  if (set != NULL)
    g_hash_table_replace (r->home, g_strdup (name), g_strdup (set));
  home = g_strdup (g_hash_table_lookup (r->home, name));
  g_mutex_unlock (&r->stats_lock);
  return home;
}

df_blk *
df_relay_open (void *relay, const char *name, char **description,
               GError **err)
{
  DfRelay *r = relay;
  g_autofree char *first = NULL, *where = NULL;
  g_autofree char *home = relay_home (r, name, NULL);
  GError *last = NULL;

  /* each server once, in turn: the first that serves name wins */
  for (guint i = 0; i < 64; i++)
    {
      g_autofree char *host = NULL, *port = NULL;
      struct nbd_handle *h;

      if (!df_relay_upstreams_pick (r->up, where, where ? NULL : home, &host,
                                    &port))
        break;
      g_free (where);
      where = g_strdup_printf ("%s:%s", host, port);
      if (first != NULL && strcmp (first, where) == 0)
        break;
      if (first == NULL)
        first = g_strdup (where);
      g_clear_error (&last);
      h = upstream_connect (name, host, port, g_get_monotonic_time ()
                            + r->timeout_s * G_USEC_PER_SEC, &last);
      if (h == NULL)
        {
          if (!g_error_matches (last, DF_ERROR, DF_ERROR_NOT_FOUND))
            df_relay_upstreams_mark_down (r->up, host, port);
          continue;
        }
      *description = upstream_description (h);
      g_message ("relay: export %s: upstream %s", name, where);
      if (nbd_is_read_only (h) != 1)
        g_free (relay_home (r, name, where));
      return &relay_blk_new (r, name, h, g_steal_pointer (&where),
                             *description)->blk;
    }
  if (last != NULL)
    g_propagate_error (err, last);
  else
    g_set_error (err, DF_ERROR, DF_ERROR_IO,
                 "export '%s': no stream server known to the relay", name);
  return NULL;
}

/* ---- the relay ------------------------------------------------------------ */

DfRelay *
df_relay_new (DfRelayConf *c)
{
  DfRelay *r = g_new0 (DfRelay, 1);

  r->up = g_steal_pointer (&c->upstreams);
  r->cache = c->cache_bytes >= DF_RELAY_CHUNK
                 ? df_relay_cache_new (c->cache_bytes) : NULL;
  r->stall_s = c->stall_s;
  r->timeout_s = MAX (1u, MIN (c->timeout_s, c->stall_s));
  g_mutex_init (&r->stats_lock);
  r->home = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  return r;
}

void
df_relay_free (DfRelay *r)
{
  if (r == NULL)
    return;
  df_relay_upstreams_free (r->up);
  df_relay_cache_free (r->cache);
  g_mutex_clear (&r->stats_lock);
  g_hash_table_destroy (r->home);
  g_free (r);
}

void
df_relay_stats (DfRelay *r, DfRelayStats *out)
{
  g_mutex_lock (&r->stats_lock);
  *out = r->st;
  g_mutex_unlock (&r->stats_lock);
  if (r->cache != NULL)
    df_relay_cache_stats (r->cache, &out->cache);
  else
    out->cache = (DfRelayCacheStats){ 0 };
}

void
df_relay_log_stats (DfRelay *r)
{
  DfRelayStats s;

  df_relay_stats (r, &s);
  g_message ("relay: client reads %" G_GUINT64_FORMAT " bytes, upstream "
             "reads %" G_GUINT64_FORMAT " bytes, cache hits %" G_GUINT64_FORMAT
             " bytes, cached %" G_GUINT64_FORMAT " bytes, failovers %"
             G_GUINT64_FORMAT ", longest stall %" G_GUINT64_FORMAT " ms",
             s.client_read_bytes, s.upstream_read_bytes, s.cache.hit_bytes,
             s.cache.cached_bytes, s.failovers, s.stall_max_ms);
}
