/* streamsvc: export names -> opened block stacks (see exports.h).
 *
 * The registry (DfExports) holds:
 *   chains: version file path -> df_blk (df_chain_open once, shared; the
 *           registry holds one ref, every user takes its own);
 *   caches: device name -> CacheEntry (one write cache per device and
 *           binding: boot generation, type, vdisk, version, cache mode;
 *           one DfCache per device directory at any time).  Its fence
 *           layer (blk_fence.h) is the blk of every session of the entry;
 *           an entry whose binding went stale is fenced, then retired by
 *           the next open (drained, cache flushed and released) or dropped
 *           when its last session closes.
 *           The mode's row (df_cache_mode_desc) decides what the entry
 *           serves: df_cache_mode_open gives a write cache, or for a mode
 *           without a server-side one (hypervisor) the chain of the
 *           version the generation pinned, read-only, so a promotion
 *           reaches it only at the next generation.  A mode that pins its
 *           base (private) is served the version recorded in its cache
 *           directory (df_cache_pin_*), whatever the newest one is.
 * Both tables are protected by ex->lock, which is held for the whole of an
 * open so that two sessions of one device can never open two caches over
 * the same persistent files.
 *
 * A checker thread compares every entry with sessions against the farm
 * (one look-up per entry, not per session); the fence layer checks again
 * after each FLUSH and FUA request.  On PostgreSQL a change watch
 * (watch.h: LISTEN/NOTIFY) wakes the checker as each change commits, and
 * the checker then polls only every CHECK_WATCHED_US as a safety net;
 * on SQLite, or while the watch is not live (DB unreachable), it polls
 * every CHECK_INTERVAL_US.
 *
 * Farm DB handles come from a small pool: a DfFarm is used by one thread
 * at a time, and pooling them keeps opens cheap (no SQLite open and
 * migration check per NBD connection).
 */
#include "exports.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "blk_fence.h"
#include "blk_lease.h"
#include "blk_readonly.h"
#include "common.h"
#include "farm.h"
#include "leases.h"
#include "sessions.h" /* df_prom_family_header */
#include "store.h"
#include "watch.h"

#define FARM_POOL_MAX 8
#define WHO "streamsvc"
/* How stale a live session may be at most (between FLUSHes). */
#define CHECK_INTERVAL_US (500 * 1000)
/* The same while a change watch is live (changes wake the checker). */
#define CHECK_WATCHED_US (10 * G_USEC_PER_SEC)

/* What one device cache is bound to: the farm facts it was opened for.
 * Immutable but for claim_pending; owned by the entry's fence (opaque of
 * its check). */
typedef struct
{
  DfExports *ex; /* borrowed: outlives every fence */
  char *device;
  gint64 generation;
  char *type;
  gint64 vdisk_id; /* the vDisk's identity: a rename is not a change */
  char *vdisk;     /* its name at open (for logs and /v1/sessions) */
  int version;
  char *mode; /* df_cache_mode_to_string of the mode in use */
  bool maint; /* the maintenance version's cache in the store */
  char *sha256; /* the version file's hash, NULL while unsealed */
  gint64 claim_generation; /* of its tier-3 local claim (local_claim) */
  gint claim_pending; /* atomic: its tier-3 local claim was not recorded
                       * (the DB was unreachable): the next check does */
} Binding;

/* One device cache.  Refcounted: the registry and every open DfExport hold
 * a ref.  users (open DfExports) and cache are protected by ex->lock. */
typedef struct
{
  gint refcount;
  const Binding *b; /* owned by fence */
  bool persistent;  /* the row's: flush before release */
  df_blk *cache;    /* owned ref: what df_cache_mode_open gave (a write
                     * cache, or the read-only chain); NULL once retired */
  DfFence *fence;  /* owned ref */
  df_blk *fenced;  /* owned ref: the fence layer over cache, the blk of
                    * every session of this entry */
  DfLease *lease;  /* owned ref: a shared cache's lease (cache is then its
                    * lease layer over the write cache), else NULL */
  bool lost;       /* cache is a lost local cache (df_lost_blk_new) */
  char *live_mark; /* owned: its live mark (see live_mark_check) while it
                    * has users; NULL when its cache outlives the process
                    * or is lost */
  guint users;
} CacheEntry;

struct DfExports
{
  char *farm_dir;
  char *db;             /* the farm DB target (NULL: farm.db); may hold a password */
  char *farm_uuid; /* the farm's identity (df_farm_uuid), read at start */
  char *server;    /* registry name (store state), or NULL; set at start */
  GMutex lock;
  GHashTable *chains; /* path -> df_blk* (owned ref) */
  GHashTable *vdisks; /* path -> read-only layer over its chain (owned
                       * ref): the blk of every vdisk export of it */
  GHashTable *caches; /* device name -> CacheEntry* (owned ref) */
  char *shared_dir;      /* server-persistent caches' home, or NULL */
  DfLeaseKeeper *keeper; /* their leases (owned), NULL without shared_dir */
  gint lost_caches;      /* atomic: opens refused a lost local cache */
  char *incarnation;     /* this process, in its live marks; NULL when
                          * unknown (then it writes none) */
  bool stopping;         /* under lock: sessions now close with the server */
  GMutex pool_lock;
  GPtrArray *farm_pool; /* idle DfFarm* */
  GThread *checker;     /* df_exports_check at each change or poll */
  DfFarmWatch *watch;   /* owned, under check_lock; NULL on SQLite or
                         * before df_exports_watch */
  GMutex check_lock;
  GCond check_cond;
  bool check_stop; /* under check_lock */
  DfExportSource source; /* df_exports_new_source: not a farm (the relay);
                          * then only lock and caches (empty) are used */
  bool check_now;  /* under check_lock: a change was notified */
};

struct DfExport
{
  DfExports *ex;
  char *name;   /* as requested */
  char *device; /* NULL for vdisk exports */
  char *description;
  char *vdisk;       /* vdisk exports: the vdisk and version served */
  int version;
  df_blk *blk;       /* owned ref; a fence layer for device exports */
  CacheEntry *entry; /* owned ref; NULL for vdisk exports */
  guint watch_id;    /* df_fence_watch id, 0 = none */
};

static char *incarnation_of (const char *host, pid_t pid);

/* ---- name grammar ------------------------------------------------------ */

static bool
unknown_export (const char *name, GError **err)
{
  g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "unknown export '%s'", name);
  return false;
}

/* "N" -> 0..INT_MAX: digits only, no sign, no leading zero, no overflow. */
static bool
parse_version_number (const char *s, int *out)
{
  long long v = 0;
  const char *p = s;

  if (*p == '\0' || (*p == '0' && p[1] != '\0'))
    return false;
  for (; *p; p++)
    {
      if (*p < '0' || *p > '9')
        return false;
      v = v * 10 + (*p - '0');
      if (v > INT_MAX)
        return false;
    }
  *out = (int)v;
  return true;
}

static bool
parse_vdisk_part (const char *name, const char *rest, char **object,
                  int *version, GError **err)
{
  const char *at = strchr (rest, '@');
  g_autofree char *vdisk = at ? g_strndup (rest, at - rest) : g_strdup (rest);

  *version = -1;
  if (!df_validate_name ("vdisk", vdisk, NULL))
    return unknown_export (name, err);
  if (at != NULL && !parse_version_number (at + 1, version))
    return unknown_export (name, err);
  *object = g_steal_pointer (&vdisk);
  return true;
}

static bool
parse_device_part (const char *name, const char *rest, char **object,
                   GError **err)
{
  char mac[18];

  if (!df_parse_mac (rest, mac, NULL)
      && !df_validate_name ("device", rest, NULL))
    return unknown_export (name, err);
  *object = g_strdup (rest);
  return true;
}

bool
df_export_name_parse (const char *name, DfExportKind *kind, char **object,
                      int *version, GError **err)
{
  *object = NULL;
  *version = -1;
  if (name == NULL)
    return unknown_export ("(null)", err);
  if (g_str_has_prefix (name, "vdisk/"))
    {
      *kind = DF_EXPORT_KIND_VDISK;
      return parse_vdisk_part (name, name + strlen ("vdisk/"), object, version,
                               err);
    }
  if (g_str_has_prefix (name, "device/"))
    {
      *kind = DF_EXPORT_KIND_DEVICE;
      return parse_device_part (name, name + strlen ("device/"), object, err);
    }
  return unknown_export (name, err);
}

/* ---- farm handle pool ------------------------------------------------- */

static DfFarm *
farm_acquire (DfExports *ex, GError **err)
{
  DfFarm *farm = NULL;

  g_mutex_lock (&ex->pool_lock);
  if (ex->farm_pool->len > 0)
    farm
        = g_ptr_array_steal_index_fast (ex->farm_pool, ex->farm_pool->len - 1);
  g_mutex_unlock (&ex->pool_lock);
  if (farm == NULL)
    farm = df_farm_open_db (ex->farm_dir, ex->db, false, WHO, err);
  return farm;
}

static void farm_release (DfExports *ex, DfFarm *farm);

/* For the reads offline mode serves (farm.h): a pooled farm whose
 * PostgreSQL DB answers now, or while it is unreachable the local
 * snapshot (farm_release closes it).  Not for the binding checks: an
 * unreachable DB must fence nothing, the snapshot never decides. */
static DfFarm *
farm_acquire_read (DfExports *ex, GError **err)
{
  g_autoptr (GError) local = NULL;
  DfFarm *farm = farm_acquire (ex, &local);

  if (farm != NULL
      && (!df_farm_db_is_remote (ex->db) || df_farm_ping (farm, &local)))
    return farm;
  if (farm != NULL)
    farm_release (ex, farm);
  if (!df_farm_error_unreachable (ex->db, local))
    {
      g_propagate_error (err, g_steal_pointer (&local));
      return NULL;
    }
  return df_farm_open_snapshot (ex->farm_dir, ex->db, WHO, err);
}

/* Takes farm. */
static void
farm_release (DfExports *ex, DfFarm *farm)
{
  if (df_farm_offline (farm))
    {
      df_farm_close (farm);
      return;
    }
  g_mutex_lock (&ex->pool_lock);
  if (ex->farm_pool->len < FARM_POOL_MAX)
    {
      g_ptr_array_add (ex->farm_pool, farm);
      farm = NULL;
    }
  g_mutex_unlock (&ex->pool_lock);
  if (farm != NULL)
    df_farm_close (farm);
}

/* ---- bindings ---------------------------------------------------------- */

static void
binding_free (gpointer p)
{
  Binding *b = p;

  g_free (b->device);
  g_free (b->type);
  g_free (b->vdisk);
  g_free (b->mode);
  g_free (b->sha256);
  g_free (b);
}

/* What the farm says a device's sessions must be bound to now. */
typedef struct
{
  DfDevice *dev;
  gint64 vdisk_id; /* of dev->vdisk */
  DfVersion *v;
  DfCacheMode mode;
  char *mode_str;
  char *dir; /* where its writes go */
  bool maint;
  bool pinned;     /* v is the version recorded by the mode's pin */
  char *pin_error; /* the pin names another vdisk: why it cannot open */
} Resolved;

static void
resolved_clear (Resolved *r)
{
  g_clear_pointer (&r->dev, df_device_free);
  g_clear_pointer (&r->v, df_version_free);
  g_clear_pointer (&r->mode_str, g_free);
  g_clear_pointer (&r->dir, g_free);
  g_clear_pointer (&r->pin_error, g_free);
}

static char *device_cache_dir (DfFarm *farm, const DfDevice *dev,
                               const DfVersion *v, DfCacheMode *mode,
                               bool *maint, GError **err);

/* A mode that pins its base (private) is served the version its pin
 * records (df_farm_device_pin), once there is one; a pin over another
 * vdisk than the device's leaves r->v alone (so the binding sees the
 * vdisk change) and says why no cache can open.  False + err when the pin
 * or its version is bad. */
static bool
apply_pin (DfFarm *farm, Resolved *r, GError **err)
{
  DfVersion *v = NULL;
  bool other = false;

  if (r->maint || !df_cache_mode_desc (&r->mode)->pins_base)
    return true;
  if (!df_farm_device_pin (farm, r->dev, &v, &other, err))
    return false;
  if (v == NULL)
    return true; /* a new private image: pinned at its first open */
  if (other)
    r->pin_error = g_strdup_printf (
        "device %s has a private image over vdisk %s v%d but now uses "
        "vdisk %s: export it (device export) and delete it (device reset "
        "--discard) first", r->dev->name, v->vdisk, v->number,
        r->dev->vdisk);
  else
    {
      df_version_free (r->v);
      r->v = g_steal_pointer (&v);
      r->pinned = true;
    }
  g_clear_pointer (&v, df_version_free);
  return true;
}

/* Resolve device key (name or MAC) as a new open would.  False + err
 * (r cleared) when the device or a version it can boot is missing. */
static bool
resolve_device (DfFarm *farm, const char *key, Resolved *r, GError **err)
{
  *r = (Resolved) { 0 };
  r->dev = df_farm_device_get (farm, key, err);
  g_autoptr (DfVdisk) vd = r->dev != NULL
                             ? df_farm_vdisk_get (farm, r->dev->vdisk, err)
                             : NULL;
  if (vd != NULL)
    {
      r->vdisk_id = vd->id;
      r->v = df_farm_version_for_type (farm, r->dev->vdisk, r->dev->type,
                                       err);
    }
  if (r->v != NULL)
    r->dir = device_cache_dir (farm, r->dev, r->v, &r->mode, &r->maint, err);
  if (r->dir == NULL || !apply_pin (farm, r, err))
    {
      resolved_clear (r);
      return false;
    }
  r->mode_str = df_cache_mode_to_string (&r->mode);
  return true;
}

static const char *
maint_suffix (bool maint)
{
  return maint ? " (maintenance version cache)" : "";
}

/* NULL when b is what the farm says now (r), else a new string naming the
 * first difference.  The version counts for maintenance devices only: a
 * production or test device keeps the version its boot generation pinned
 * until its next boot (new versions never disturb running targets). */
static char *
binding_mismatch (const Binding *b, const Resolved *r)
{
  const DfDevice *d = r->dev;

  if (d->generation != b->generation)
    return g_strdup_printf ("device %s started boot generation %"
                            G_GINT64_FORMAT " (sessions are of %"
                            G_GINT64_FORMAT ")",
                            b->device, d->generation, b->generation);
  if (r->vdisk_id != b->vdisk_id)
    return g_strdup_printf ("device %s now uses vdisk %s (was %s)", b->device,
                            d->vdisk, b->vdisk);
  if (strcmp (d->type, b->type) != 0)
    return g_strdup_printf ("device %s is now of type %s (was %s)", b->device,
                            d->type, b->type);
  if (strcmp (d->type, "maintenance") == 0 && r->v->number != b->version)
    return g_strdup_printf ("maintenance device %s now selects %s@%d (was "
                            "@%d)", b->device, r->v->vdisk, r->v->number,
                            b->version);
  if (r->maint != b->maint || strcmp (r->mode_str, b->mode) != 0)
    return g_strdup_printf ("device %s: write cache is now %s%s (was %s%s)",
                            b->device, r->mode_str, maint_suffix (r->maint),
                            b->mode, maint_suffix (b->maint));
  return NULL;
}

/* Tier 3: record b's local claim that the DB could not take when b's
 * entry opened (offline).  NULL when recorded (or still not), else why
 * the sessions must stop: another server claimed the same generation
 * meanwhile, and two caches of one boot cannot both be right (new). */
static char *
claim_late (Binding *b, DfFarm *farm)
{
  g_autoptr (GError) e = NULL;

  if (df_farm_lease_claim_local (farm, b->device, b->ex->server,
                                 b->claim_generation, df_farm_now_ms (), &e))
    {
      g_atomic_int_set (&b->claim_pending, 0);
      g_message ("device %s: local write cache of boot generation %"
                 G_GINT64_FORMAT " recorded (opened while the farm DB was "
                 "unreachable)", b->device, b->generation);
      return NULL;
    }
  if (!g_error_matches (e, DF_ERROR, DF_ERROR_DENIED))
    return NULL;
  g_atomic_int_inc (&b->ex->lost_caches);
  return g_strdup (e->message);
}

/* NULL while b matches the farm, or when the farm cannot say (DB
 * unreachable: offline mode keeps serving); else a new string. */
static char *
binding_stale_reason (Binding *b)
{
  g_autoptr (GError) err = NULL;
  DfFarm *farm = farm_acquire (b->ex, &err);
  Resolved r;
  char *why = NULL;

  if (farm == NULL)
    {
      g_debug ("device %s: cannot check its binding: %s", b->device,
               err->message);
      return NULL;
    }
  if (!resolve_device (farm, b->device, &r, &err))
    {
      if (g_error_matches (err, DF_ERROR, DF_ERROR_NOT_FOUND))
        why = g_strdup_printf ("device %s: %s", b->device, err->message);
      else
        g_debug ("device %s: cannot check its binding: %s", b->device,
                 err->message);
    }
  else if ((why = binding_mismatch (b, &r)) == NULL
           && g_atomic_int_get (&b->claim_pending))
    why = claim_late (b, farm);
  farm_release (b->ex, farm);
  resolved_clear (&r);
  return why;
}

/* DfFenceCheck: run before a FLUSH or FUA write is acknowledged. */
static bool
binding_check (void *opaque, char **reason)
{
  *reason = binding_stale_reason (opaque);
  return *reason == NULL;
}

/* ---- cache entries ---------------------------------------------------- */

static CacheEntry *
cache_entry_ref (CacheEntry *ce)
{
  g_atomic_int_inc (&ce->refcount);
  return ce;
}

/* Drop ce's cache, flushed first when persistent (its acknowledged
 * flushes are durable already; this saves what came after). */
static void
cache_entry_release_cache (CacheEntry *ce)
{
  int errnum = 0;

  if (ce->cache == NULL)
    return;
  if (ce->persistent && df_blk_flush (ce->cache, &errnum) < 0)
    g_warning ("device %s: flushing the write cache failed: %s",
               ce->b->device, g_strerror (errnum));
  g_clear_pointer (&ce->cache, df_blk_unref);
  /* The lease goes only once the cache is closed: its last flush is the
   * holder's. */
  if (ce->lease != NULL)
    df_lease_keeper_drop (ce->b->ex->keeper, ce->lease, ce->b->device);
}

static void
cache_entry_unref (CacheEntry *ce)
{
  if (ce == NULL || !g_atomic_int_dec_and_test (&ce->refcount))
    return;
  cache_entry_release_cache (ce);
  df_blk_unref (ce->fenced);
  df_lease_unref (ce->lease);
  df_fence_unref (ce->fence);
  g_free (ce->live_mark);
  g_free (ce);
}

/* ---- registry --------------------------------------------------------- */

static gpointer checker_main (gpointer data);

/* DfChangeFn (watch thread): check the bindings now. */
static void
on_farm_change (gpointer data)
{
  DfExports *ex = data;

  g_mutex_lock (&ex->check_lock);
  ex->check_now = true;
  g_cond_signal (&ex->check_cond);
  g_mutex_unlock (&ex->check_lock);
}

DfExports *
df_exports_new (const char *farm_dir, const char *db, GError **err)
{
  DfFarm *farm = df_farm_open_or_snapshot (farm_dir, db, WHO, err);
  DfExports *ex;

  if (farm == NULL)
    return NULL;
  ex = g_new0 (DfExports, 1);
  ex->farm_dir = g_strdup (farm_dir);
  ex->incarnation = incarnation_of (g_get_host_name (), getpid ());
  ex->db = g_strdup (db);
  ex->farm_uuid = g_strdup (df_farm_uuid (farm));
  g_mutex_init (&ex->lock);
  g_mutex_init (&ex->pool_lock);
  g_mutex_init (&ex->check_lock);
  g_cond_init (&ex->check_cond);
  ex->chains = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                      (GDestroyNotify)df_blk_unref);
  ex->vdisks = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                      (GDestroyNotify)df_blk_unref);
  ex->caches = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                      (GDestroyNotify)cache_entry_unref);
  ex->farm_pool
      = g_ptr_array_new_with_free_func ((GDestroyNotify)df_farm_close);
  if (df_farm_offline (farm))
    df_farm_close (farm); /* started offline: the pool is of the DB only */
  else
    g_ptr_array_add (ex->farm_pool, farm);
  ex->checker = g_thread_new ("binding-check", checker_main, ex);
  return ex;
}

DfExports *
df_exports_new_source (const DfExportSource *src)
{
  DfExports *ex = g_new0 (DfExports, 1);

  g_assert (src->open != NULL);
  ex->source = *src;
  g_mutex_init (&ex->lock);
  g_mutex_init (&ex->pool_lock);
  g_mutex_init (&ex->check_lock);
  g_cond_init (&ex->check_cond);
  ex->chains = g_hash_table_new (g_str_hash, g_str_equal);
  ex->vdisks = g_hash_table_new (g_str_hash, g_str_equal);
  ex->caches = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                      (GDestroyNotify)cache_entry_unref);
  ex->farm_pool = g_ptr_array_new ();
  return ex;
}

void
df_exports_watch (DfExports *ex)
{
  DfFarmWatch *w = df_farm_watch_start (ex->farm_dir, ex->db, on_farm_change,
                                        ex);

  g_mutex_lock (&ex->check_lock);
  g_assert (ex->watch == NULL);
  ex->watch = w;
  g_mutex_unlock (&ex->check_lock);
}

const char *
df_exports_farm_uuid (DfExports *ex)
{
  return ex->farm_uuid;
}

void
df_exports_free (DfExports *ex)
{
  if (ex == NULL)
    return;
  g_mutex_lock (&ex->check_lock);
  ex->check_stop = true;
  g_cond_signal (&ex->check_cond);
  g_mutex_unlock (&ex->check_lock);
  if (ex->checker != NULL)
    g_thread_join (ex->checker);
  df_farm_watch_stop (ex->watch); /* after the checker, which reads it */
  df_exports_flush_all (ex);
  g_hash_table_destroy (ex->caches);
  df_lease_keeper_free (ex->keeper);
  g_free (ex->shared_dir);
  g_hash_table_destroy (ex->vdisks);
  g_hash_table_destroy (ex->chains);
  g_ptr_array_free (ex->farm_pool, TRUE);
  g_mutex_clear (&ex->lock);
  g_mutex_clear (&ex->pool_lock);
  g_mutex_clear (&ex->check_lock);
  g_cond_clear (&ex->check_cond);
  g_free (ex->farm_dir);
  g_free (ex->db);
  g_free (ex->farm_uuid);
  g_free (ex->server);
  g_free (ex->incarnation);
  g_free (ex);
}

void
df_exports_stopping (DfExports *ex)
{
  g_mutex_lock (&ex->lock);
  ex->stopping = true;
  g_mutex_unlock (&ex->lock);
}

/* Path of a version's file: store/<vdisk>/<file> unless absolute.
 * Returns a new string. */
static char *
version_file_path (DfFarm *farm, const DfVersion *v)
{
  g_autofree char *store = NULL;

  if (g_path_is_absolute (v->file))
    return g_strdup (v->file);
  store = df_farm_store_dir (farm, v->vdisk);
  return g_build_filename (store, v->file, NULL);
}

/* The chain for a version file, opened once.  Caller holds ex->lock.
 * Returns a new ref or NULL + err. */
static df_blk *
chain_get_locked (DfExports *ex, const char *path, GError **err)
{
  df_blk *chain = g_hash_table_lookup (ex->chains, path);

  if (chain == NULL)
    {
      chain = df_chain_open (path, DF_FMT_UNKNOWN, err);
      if (chain == NULL)
        return NULL;
      g_hash_table_insert (ex->chains, g_strdup (path), chain);
    }
  return df_blk_ref (chain);
}

/* The read-only layer over a version file's chain, made once.  Caller
 * holds ex->lock.  Returns a new ref or NULL + err. */
static df_blk *
vdisk_get_locked (DfExports *ex, const char *path, GError **err)
{
  df_blk *ro = g_hash_table_lookup (ex->vdisks, path);
  g_autoptr (df_blk) chain = NULL;

  if (ro == NULL)
    {
      chain = chain_get_locked (ex, path, err);
      if (chain == NULL)
        return NULL;
      ro = df_readonly_blk_new (chain);
      g_hash_table_insert (ex->vdisks, g_strdup (path), ro);
    }
  return df_blk_ref (ro);
}

/* A version this server's store state calls missing or corrupt is
 * refused, and so is a version stacked on one.  Without a registry name,
 * or without a record yet (verification at start still running), the
 * file's own open decides. */
static bool
version_servable (DfExports *ex, DfFarm *farm, const DfVersion *v,
                  GError **err)
{
  g_autoptr (DfVersion) cur = NULL;
  int number = v->number;

  while (ex->server != NULL && number >= 0)
    {
      GError *e = NULL;
      g_autoptr (DfStoreRecord) rec
          = df_farm_store_state_get (farm, ex->server, v->vdisk, number, &e);

      if (e != NULL)
        {
          g_propagate_error (err, e);
          return false;
        }
      if (rec != NULL && (rec->state == DF_STORE_MISSING
                          || rec->state == DF_STORE_CORRUPT))
        {
          g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                       "vdisk %s@%d: this server's copy of version %d is %s "
                       "(%s): not served; 'diskfarm store sync' fetches a "
                       "verified copy", v->vdisk, v->number, number,
                       df_store_state_name (rec->state),
                       rec->detail ? rec->detail : "no detail");
          return false;
        }
      g_clear_pointer (&cur, df_version_free);
      cur = df_farm_version_get (farm, v->vdisk, number, err);
      if (cur == NULL)
        return false;
      number = cur->parent;
    }
  return true;
}

bool
df_exports_offline_generation (DfExports *ex, const char *device,
                               gint64 generation, GError **err)
{
  g_autoptr (GError) local = NULL;
  DfFarm *farm = farm_acquire_read (ex, err);
  bool ok;

  if (farm == NULL)
    return false;
  if (!df_farm_offline (farm))
    {
      farm_release (ex, farm);
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "the farm DB answers: boot generations are recorded "
                   "there, not offline");
      return false;
    }
  ok = df_farm_offline_generation_note (farm, device, generation, &local);
  farm_release (ex, farm);
  if (ok)
    g_message ("device %s: boot generation %" G_GINT64_FORMAT " given "
               "offline by a bootstrap server (journaled until the farm DB "
               "is back)", device, generation);
  else
    g_propagate_error (err, g_steal_pointer (&local));
  return ok;
}

char *
df_exports_version_file (DfExports *ex, const char *vdisk, int number,
                         GError **err)
{
  DfFarm *farm = farm_acquire_read (ex, err);
  g_autoptr (DfVersion) v = NULL;
  char *path = NULL;

  if (farm == NULL)
    return NULL;
  v = df_farm_version_get (farm, vdisk, number, err);
  if (v != NULL && v->sha256 == NULL)
    g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                 "vdisk %s@%d is not sealed: its file is not handed out",
                 vdisk, number);
  else if (v != NULL && version_servable (ex, farm, v, err))
    path = version_file_path (farm, v);
  farm_release (ex, farm);
  return path;
}

void
df_exports_set_server (DfExports *ex, const char *server)
{
  g_free (ex->server);
  ex->server = g_strdup (server);
}

void
df_exports_set_shared_caches (DfExports *ex, const char *dir, gint64 ttl_ms)
{
  g_return_if_fail (ex->server != NULL && ex->keeper == NULL);
  ex->shared_dir = g_strdup (dir);
  ex->keeper = df_lease_keeper_new (ex->farm_dir, ex->db, ex->server, ttl_ms);
}

/* Resolution failures from the farm keep their code; NOT_FOUND names the
 * export as NBD wants (NBD_REP_ERR_UNKNOWN text). */
static void
resolve_error (const char *name, GError *cause, GError **err)
{
  if (g_error_matches (cause, DF_ERROR, DF_ERROR_NOT_FOUND))
    g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "unknown export '%s': %s",
                 name, cause->message);
  else
    g_set_error (err, cause->domain, cause->code, "export '%s': %s", name,
                 cause->message);
  g_error_free (cause);
}

/* desc (taken) followed by DF_EXPORT_DESC_SHA256 and sha256 when there is
 * one (a sealed version served as it is).  New string. */
static char *
description_with_hash (char *desc, const char *sha256)
{
  if (sha256 == NULL)
    return desc;
  g_autofree char *d = desc;
  return g_strconcat (d, DF_EXPORT_DESC_SHA256, sha256, NULL);
}

static DfExport *
export_new (DfExports *ex, const char *name, df_blk *blk, char *description)
{
  DfExport *e = g_new0 (DfExport, 1);

  e->ex = ex;
  e->name = g_strdup (name);
  e->blk = blk;
  e->description = description;
  return e;
}

/* vdisk/<name> (newest production) or vdisk/<name>@<N>. */
static DfExport *
open_vdisk (DfExports *ex, DfFarm *farm, const char *name, const char *vdisk,
            int number, GError **err)
{
  GError *cause = NULL;
  g_autoptr (DfVersion) v = NULL;
  g_autofree char *path = NULL;
  df_blk *chain;
  DfExport *e;

  if (number < 0)
    v = df_farm_version_for_type (farm, vdisk, "production", &cause);
  else
    v = df_farm_version_get (farm, vdisk, number, &cause);
  if (v == NULL)
    {
      resolve_error (name, cause, err);
      return NULL;
    }
  if (!version_servable (ex, farm, v, err))
    return NULL;
  path = version_file_path (farm, v);
  g_mutex_lock (&ex->lock);
  chain = vdisk_get_locked (ex, path, err);
  g_mutex_unlock (&ex->lock);
  if (chain == NULL)
    return NULL;
  e = export_new (ex, name, chain,
                  description_with_hash (
                      g_strdup_printf ("vdisk %s v%d (%s)", v->vdisk,
                                       v->number,
                                       df_version_state_name (v->state)),
                      v->sha256));
  e->vdisk = g_strdup (v->vdisk);
  e->version = v->number;
  return e;
}

/* The file a device cache stacks on.  An unsealed maintenance version has
 * no file yet: its writes go to the cache over the parent version.
 * Returns a new string or NULL + err. */
static char *
device_base_path (DfFarm *farm, const DfVersion *v, GError **err)
{
  g_autofree char *path = version_file_path (farm, v);
  g_autoptr (DfVersion) parent = NULL;

  if (v->state != DF_VSTATE_MAINTENANCE || v->parent < 0
      || g_file_test (path, G_FILE_TEST_EXISTS))
    return g_steal_pointer (&path);
  parent = df_farm_version_get (farm, v->vdisk, v->parent, err);
  if (parent == NULL)
    return NULL;
  return version_file_path (farm, parent);
}

/* Where a device's writes go.  A maintenance device on an unsealed
 * maintenance version writes to a server-persistent cache dedicated to that
 * version, <store>/<vdisk>/<vdisk>.<N>.maint/, which `diskfarm version seal`
 * turns into the version's qcow2 layer (it is flock()ed while open, so seal
 * and a second session are refused while one holds it).  Every other
 * device writes to its own cache directory in its own mode.  Fills *mode
 * and returns the directory (new string) or NULL + err. */
static char *
device_cache_dir (DfFarm *farm, const DfDevice *dev, const DfVersion *v,
                  DfCacheMode *mode, bool *maint, GError **err)
{
  *maint = v->state == DF_VSTATE_MAINTENANCE
           && strcmp (dev->type, "maintenance") == 0;
  if (!*maint)
    {
      if (!df_cache_mode_parse (dev->cache_mode, mode, err))
        return NULL;
      return df_farm_cache_dir (farm, dev->name);
    }
  g_autofree char *store = df_farm_store_dir (farm, v->vdisk);
  mode->kind = DF_CACHE_PERSISTENT;
  mode->ram_limit = 0;
  return df_store_maint_path (store, v->vdisk, v->number);
}

/* The fence of a new entry: its label names the binding. */
static DfFence *
binding_fence_new (Binding *b)
{
  g_autofree char *label
      = g_strdup_printf ("device %s generation %" G_GINT64_FORMAT
                         " (vdisk %s v%d, cache %s%s)",
                         b->device, b->generation, b->vdisk, b->version,
                         b->mode, maint_suffix (b->maint));

  return df_fence_new (label, binding_check, b, binding_free);
}

/* A mode that pins its base records the version at its first open,
 * before any of its data exists. */
static bool
pin_first_open (const Resolved *r, GError **err)
{
  DfCachePin pin = { .vdisk = r->v->vdisk, .version = r->v->number,
                     .sha256 = r->v->sha256 };

  if (r->maint || r->pinned || !df_cache_mode_desc (&r->mode)->pins_base)
    return true;
  return df_cache_pin_write (r->dir, &pin, err);
}

/* The binding of a new entry for r (owned by the fence made for it). */
static Binding *
binding_new (DfExports *ex, const Resolved *r)
{
  Binding *b = g_new0 (Binding, 1);

  b->ex = ex;
  b->device = g_strdup (r->dev->name);
  b->generation = r->dev->generation;
  b->type = g_strdup (r->dev->type);
  b->vdisk_id = r->vdisk_id;
  b->vdisk = g_strdup (r->v->vdisk);
  b->version = r->v->number;
  b->mode = g_strdup (r->mode_str);
  b->maint = r->maint;
  b->sha256 = g_strdup (r->v->sha256);
  return b;
}

/* Where a device's cache can fail over (DESIGN.md "A farm of many
 * servers"): a server-persistent cache under --shared-cache-dir is leased
 * (tier 2); any other write cache of a server with a registry name is
 * claimed as local to it (tier 3): a server or ram cache for its boot
 * generation, a server-persistent or private one on the server's own
 * disk for every generation (it outlives boots, not the move). */
static bool
entry_leased (DfExports *ex, const Resolved *r)
{
  return ex->shared_dir != NULL && !r->maint
         && r->mode.kind == DF_CACHE_PERSISTENT;
}

/* A device write cache of this server's (not the maintenance version's,
 * which lives in the store; not hypervisor, which has none). */
static bool
entry_has_write_cache (const Resolved *r)
{
  return !r->maint && df_cache_mode_desc (&r->mode)->open_store != NULL;
}

/* A server or ram cache: in this process only (an unlinked file, RAM). */
static bool
entry_dies_with_process (const Resolved *r)
{
  return entry_has_write_cache (r) && !df_cache_mode_desc (&r->mode)->persistent;
}

static bool
entry_local (DfExports *ex, const Resolved *r)
{
  return ex->server != NULL && entry_has_write_cache (r)
         && !entry_leased (ex, r);
}

static gint64
local_claim_generation (const Resolved *r)
{
  return df_cache_mode_desc (&r->mode)->persistent ? DF_LEASE_EVERY_GENERATION
                                                   : r->dev->generation;
}

/* ---- live marks: a local cache across a restart of its server -------------
 * While a cache that dies with the process has sessions, its process
 * keeps a mark in the cache directory, live.<generation>.<pid>, holding
 * "<host> <pid> <start time>" (its incarnation).  Several servers may
 * share one farm directory, so a mark speaks only of its own process: a
 * process that finds, for the generation it is asked for, the mark of a
 * process of this host that is gone knows that generation's cache died
 * with it (kill, crash, or a stop with sessions open) under a running OS.
 * The device then gets a lost cache (every request fails), never an empty
 * one in its place.  A mark goes when its process's last session of the
 * cache ends, but not at a stop; the gone processes' marks of other
 * generations are stale (the device booted again since) and removed. */
#define LIVE_MARK_PREFIX "live."

/* This process's incarnation: host, pid and start time (clock ticks
 * after boot, /proc/PID/stat field 22), or NULL when unreadable. */
static char *
incarnation_of (const char *host, pid_t pid)
{
  g_autofree char *path = g_strdup_printf ("/proc/%d/stat", (int) pid);
  g_autofree char *stat = NULL;
  const char *p;
  unsigned long long start;

  if (!g_file_get_contents (path, &stat, NULL, NULL)
      || (p = strrchr (stat, ')')) == NULL
      || sscanf (p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u "
                        "%*d %*d %*d %*d %*d %*d %llu", &start) != 1)
    return NULL;
  return g_strdup_printf ("%s %d %llu\n", host, (int) pid, start);
}

static char *
live_mark_path (const char *dir, gint64 generation)
{
  g_autofree char *name = g_strdup_printf (LIVE_MARK_PREFIX "%" G_GINT64_FORMAT
                                           ".%d", generation, (int) getpid ());
  return g_build_filename (dir, name, NULL);
}

/* Whether r's cache keeps a live mark: it dies with the process, and this
 * process knows its incarnation (without /proc it can judge no mark). */
static bool
entry_marked (DfExports *ex, const Resolved *r)
{
  return entry_dies_with_process (r) && ex->incarnation != NULL;
}

/* Whether the process a mark names is gone: of this host (marks of other
 * hosts, on a shared farm directory, cannot be judged here and are left
 * alone) and no longer running with that start time. */
static bool
mark_process_gone (DfExports *ex, const char *mark)
{
  char host[256];
  int pid;
  g_autofree char *now = NULL;

  if (sscanf (mark, "%255s %d", host, &pid) != 2 || pid <= 0
      || strcmp (host, g_get_host_name ()) != 0)
    return false;
  if (pid == getpid ())
    return strcmp (mark, ex->incarnation) != 0;
  now = incarnation_of (host, pid);
  return now == NULL || strcmp (now, mark) != 0;
}

/* False (logged, counted) when r's generation had its cache in a process
 * of this server's host that is gone; removes the gone processes' marks
 * of other generations. */
static bool
live_mark_check (DfExports *ex, const Resolved *r)
{
  g_autofree char *want = g_strdup_printf (LIVE_MARK_PREFIX "%" G_GINT64_FORMAT
                                           ".", r->dev->generation);
  g_autoptr (GDir) d = g_dir_open (r->dir, 0, NULL);
  const char *name;
  bool died = false;

  while (d != NULL && (name = g_dir_read_name (d)) != NULL)
    {
      g_autofree char *path = NULL, *mark = NULL;

      if (!g_str_has_prefix (name, LIVE_MARK_PREFIX))
        continue;
      path = g_build_filename (r->dir, name, NULL);
      if (!g_file_get_contents (path, &mark, NULL, NULL)
          || !mark_process_gone (ex, mark))
        continue;
      if (g_str_has_prefix (name, want))
        died = true;
      else
        g_unlink (path);
    }
  if (!died)
    return true;
  g_atomic_int_inc (&ex->lost_caches);
  g_warning ("device %s: its %s write cache of boot generation %" G_GINT64_FORMAT
             " died with a previous process of this server while its OS was "
             "using it; every request of its sessions fails with EIO (NBD) "
             "or MEDIUM ERROR (iSCSI) rather than serve an empty cache (the "
             "device must boot again: a new boot generation, or diskfarm "
             "device reset)", r->dev->name, r->mode_str, r->dev->generation);
  return false;
}

/* Caller holds ex->lock; at ce's first user. */
static void
live_mark_set_locked (DfExports *ex, CacheEntry *ce)
{
  g_autoptr (GError) e = NULL;

  if (ce->live_mark != NULL
      && !g_file_set_contents (ce->live_mark, ex->incarnation, -1, &e))
    g_warning ("device %s: %s (a restart of this server would not know its "
               "cache was in use)", ce->b->device, e->message);
}

/* Caller holds ex->lock; ce's last user left.  Kept when the server is
 * stopping, and while the registry's entry of the same mark has users
 * (ce was retired for it). */
static void
live_mark_drop_locked (DfExports *ex, CacheEntry *ce)
{
  CacheEntry *cur = g_hash_table_lookup (ex->caches, ce->b->device);

  if (ce->live_mark == NULL || ex->stopping)
    return;
  if (cur != NULL && cur != ce && cur->users > 0
      && g_strcmp0 (cur->live_mark, ce->live_mark) == 0)
    return;
  g_unlink (ce->live_mark);
}

/* Tier 3: false when r's generation has its local cache on another server
 * (logged, counted: the device gets a lost cache).  A farm DB that cannot
 * answer (offline mode) leaves the claim to b's next check. */
static bool
local_claim (DfExports *ex, DfFarm *farm, const Resolved *r, Binding *b)
{
  g_autoptr (GError) e = NULL;

  b->claim_generation = local_claim_generation (r);
  if (df_farm_lease_claim_local (farm, r->dev->name, ex->server,
                                 b->claim_generation, df_farm_now_ms (), &e))
    return true;
  if (!g_error_matches (e, DF_ERROR, DF_ERROR_DENIED))
    {
      g_debug ("device %s: cannot record its local cache yet: %s",
               r->dev->name, e->message);
      g_atomic_int_set (&b->claim_pending, 1);
      return true;
    }
  g_atomic_int_inc (&ex->lost_caches);
  g_warning ("%s; every request of its sessions fails with EIO (NBD) or "
             "MEDIUM ERROR (iSCSI) rather than serve another cache",
             e->message);
  return false;
}

/* Open r's write cache (or the read-only chain) over chain.  A leased
 * cache lives in the shared directory, under l's lease layer.  New ref or
 * NULL + err. */
static df_blk *
entry_cache_open (DfExports *ex, const Resolved *r, df_blk *chain,
                  const char *base_path, DfLease *l, GError **err)
{
  DfCacheMode mode = r->mode;
  g_autofree char *dir = NULL;
  df_blk *cache, *layer;

  /* A mode without a server-side cache (hypervisor) is served the
   * version read-only, through the same read-only layer as vdisk/. */
  if (!r->maint && df_cache_mode_desc (&r->mode)->open_store == NULL)
    return vdisk_get_locked (ex, base_path, err);
  mode.leased = l != NULL;
  dir = l != NULL ? g_build_filename (ex->shared_dir, r->dev->name, NULL)
                  : g_strdup (r->dir);
  cache = df_cache_mode_open (chain, dir, &mode, r->dev->quota, err);
  if (cache == NULL || l == NULL)
    return cache;
  layer = df_lease_blk_new (l, cache);
  df_blk_unref (cache);
  return layer;
}

/* A new cache entry for what r says.  Caller holds ex->lock.  Returns a
 * new entry (refcount 1) or NULL + err. */
static CacheEntry *
cache_entry_open_locked (DfExports *ex, DfFarm *farm, const Resolved *r,
                         GError **err)
{
  g_autofree char *base_path = NULL;
  g_autofree char *shared = NULL;
  g_autoptr (df_blk) chain = NULL;
  g_autoptr (DfFence) fence = NULL;
  g_autoptr (DfLease) lease = NULL;
  df_blk *cache;
  CacheEntry *ce;
  Binding *b;
  GError *local = NULL;
  bool lost = false;

  if (r->pin_error != NULL)
    {
      g_set_error_literal (err, DF_ERROR, DF_ERROR_INVALID, r->pin_error);
      return NULL;
    }
  if (!version_servable (ex, farm, r->v, err))
    return NULL;
  base_path = device_base_path (farm, r->v, err);
  if (base_path == NULL)
    return NULL;
  chain = chain_get_locked (ex, base_path, err);
  if (chain == NULL || !pin_first_open (r, err))
    return NULL;
  b = binding_new (ex, r);
  fence = binding_fence_new (b); /* owns b */
  if (entry_leased (ex, r))
    {
      shared = g_build_filename (ex->shared_dir, r->dev->name, NULL);
      lease = df_lease_keeper_take (ex->keeper, farm, r->dev->name,
                                    r->dev->generation, shared, fence, err);
      if (lease == NULL)
        return NULL;
    }
  else if (entry_local (ex, r))
    lost = !local_claim (ex, farm, r, b);
  if (!lost && entry_marked (ex, r))
    lost = !live_mark_check (ex, r);
  cache = lost ? df_lost_blk_new (chain->size)
               : entry_cache_open (ex, r, chain, base_path, lease, &local);
  if (cache == NULL && r->maint
      && g_error_matches (local, DF_ERROR, DF_ERROR_BUSY))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "maintenance version %s@%d is already open (another "
                   "maintenance session, or a seal in progress)",
                   r->v->vdisk, r->v->number);
      g_error_free (local);
      return NULL;
    }
  if (cache == NULL)
    {
      if (lease != NULL)
        df_lease_keeper_drop (ex->keeper, lease, r->dev->name);
      g_propagate_error (err, local);
      return NULL;
    }
  ce = g_new0 (CacheEntry, 1);
  ce->refcount = 1;
  ce->fence = g_steal_pointer (&fence);
  ce->b = b;
  ce->persistent = df_cache_mode_is_persistent (&r->mode) && !lost;
  ce->cache = cache;
  ce->lease = g_steal_pointer (&lease);
  ce->lost = lost;
  if (!lost && entry_marked (ex, r))
    ce->live_mark = live_mark_path (r->dir, r->dev->generation);
  ce->fenced = df_fence_blk_new (ce->fence, cache);
  return ce;
}

/* Fence ce's sessions (why; NULL: ce's fence is tripped already), wait
 * for their requests in flight, release its cache (flushed) and drop it
 * from the registry, so that a new entry can take the same files.  Caller
 * holds ex->lock; ce may be freed. */
static void
cache_entry_retire_locked (DfExports *ex, CacheEntry *ce, const char *why)
{
  if (why != NULL)
    df_fence_trip (ce->fence, why);
  df_fence_drain (ce->fence);
  cache_entry_release_cache (ce);
  if (g_hash_table_lookup (ex->caches, ce->b->device) == ce)
    g_hash_table_remove (ex->caches, ce->b->device);
}

/* Why old (nullable) cannot serve r: NULL when it can, else a new string. */
static char *
entry_unfit (CacheEntry *old, const Resolved *r)
{
  if (old == NULL)
    return NULL;
  if (df_fence_tripped (old->fence))
    return g_strdup (df_fence_reason (old->fence));
  return binding_mismatch (old->b, r);
}

/* Scheduled promotions take effect at the first boot after their time:
 * applied when a new entry is about to be opened, then r is resolved
 * again.  False + err when the device is no longer resolvable. */
static bool
apply_pending (DfFarm *farm, const char *key, Resolved *r, GError **err)
{
  g_autofree char *vdisk = g_strdup (r->dev->vdisk);
  GError *local = NULL;

  if (df_farm_offline (farm))
    return true; /* offline: the snapshot's versions as they are */
  if (!df_farm_versions_apply_pending (farm, vdisk, NULL, &local))
    {
      g_warning ("vdisk %s: applying scheduled promotions: %s", vdisk,
                 local->message);
      g_clear_error (&local);
    }
  resolved_clear (r);
  return resolve_device (farm, key, r, err);
}

/* The registry's entry for device key, reused only when its whole binding
 * is what the farm says now.  Otherwise the old entry's sessions are
 * fenced and drained (whatever its cache mode: a newer boot generation
 * takes over) and a new entry is opened.  A maintenance entry in use is
 * refused (one writer), or with replace retired as above.  Caller holds
 * ex->lock.  Returns a new ref (users counted) or NULL + err. */
static CacheEntry *
cache_entry_get_locked (DfExports *ex, DfFarm *farm, const char *key,
                        bool replace, GError **err)
{
  Resolved r;
  CacheEntry *old, *ce = NULL;
  g_autofree char *why = NULL;

  if (!resolve_device (farm, key, &r, err))
    return NULL;
  old = g_hash_table_lookup (ex->caches, r.dev->name);
  why = entry_unfit (old, &r);
  if (old != NULL && why == NULL && old->b->maint && old->users > 0
      && replace)
    why = g_strdup_printf ("maintenance session of device %s replaced by a "
                           "new login of the same initiator",
                           r.dev->name);
  if (old != NULL && why == NULL && old->b->maint && old->users > 0)
    g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                 "maintenance version %s@%d is already open by another "
                 "session of device %s: one maintenance session at a time",
                 old->b->vdisk, old->b->version, r.dev->name);
  else if (old != NULL && why == NULL)
    ce = old;
  else if (apply_pending (farm, key, &r, err))
    {
      if (old != NULL)
        cache_entry_retire_locked (ex, old, why);
      ce = cache_entry_open_locked (ex, farm, &r, err);
      if (ce != NULL)
        g_hash_table_insert (ex->caches, g_strdup (ce->b->device), ce);
    }
  resolved_clear (&r);
  if (ce == NULL)
    return NULL;
  if (ce->users++ == 0)
    live_mark_set_locked (ex, ce);
  return cache_entry_ref (ce);
}

/* Before the registry lock: when device key's cache would be leased and
 * another server holds the lease, wait for it (bounded; other devices'
 * opens go on meanwhile) or refuse naming that server.  A device the farm
 * cannot resolve is left to the open's own error. */
static bool
lease_wait (DfExports *ex, DfFarm *farm, const char *key, GError **err)
{
  g_autoptr (DfDevice) dev = NULL;
  DfCacheMode mode;

  if (ex->keeper == NULL)
    return true;
  dev = df_farm_device_get (farm, key, NULL);
  if (dev == NULL || !df_cache_mode_parse (dev->cache_mode, &mode, NULL)
      || mode.kind != DF_CACHE_PERSISTENT)
    return true;
  return df_lease_keeper_wait (ex->keeper, farm, dev->name, err);
}

/* device/<name> or device/<mac>. */
static DfExport *
open_device (DfExports *ex, DfFarm *farm, const char *name, const char *key,
             bool replace, GError **err)
{
  GError *cause = NULL;
  CacheEntry *ce;
  DfExport *e;
  df_blk *blk = NULL;

  if (!lease_wait (ex, farm, key, err))
    return NULL;
  g_mutex_lock (&ex->lock);
  ce = cache_entry_get_locked (ex, farm, key, replace, &cause);
  if (ce != NULL)
    blk = df_blk_ref (ce->fenced);
  g_mutex_unlock (&ex->lock);
  if (ce == NULL)
    {
      resolve_error (name, cause, err);
      return NULL;
    }
  /* only a read-only export is the version's content: it names the hash */
  e = export_new (ex, name, blk,
                  description_with_hash (
                      g_strdup_printf ("device %s cache %s%s gen %"
                                       G_GINT64_FORMAT ", vdisk %s v%d",
                                       ce->b->device, ce->b->mode,
                                       blk->readonly ? " (read-only)" : "",
                                       ce->b->generation, ce->b->vdisk,
                                       ce->b->version),
                      blk->readonly ? ce->b->sha256 : NULL));
  e->device = g_strdup (ce->b->device);
  e->vdisk = g_strdup (ce->b->vdisk);
  e->version = ce->b->version;
  e->entry = ce;
  return e;
}

/* An export of the source (df_exports_new_source). */
static DfExport *
open_source (DfExports *ex, const char *name, GError **err)
{
  char *description = NULL;
  df_blk *blk = ex->source.open (ex->source.opaque, name, &description, err);

  return blk != NULL ? export_new (ex, name, blk, description) : NULL;
}

static DfExport *
open_kind (DfExports *ex, DfFarm *farm, DfExportKind kind, const char *name,
           const char *object, int version, bool replace, GError **err)
{
  if (kind == DF_EXPORT_KIND_VDISK)
    return open_vdisk (ex, farm, name, object, version, err);
  return open_device (ex, farm, name, object, replace, err);
}

static DfExport *
exports_open (DfExports *ex, const char *name, bool replace, GError **err)
{
  DfExportKind kind;
  g_autofree char *object = NULL;
  int version;
  DfFarm *farm;
  DfExport *e;

  if (!df_export_name_parse (name, &kind, &object, &version, err))
    return NULL;
  if (ex->source.open != NULL)
    return open_source (ex, name, err);
  farm = farm_acquire_read (ex, err);
  if (farm == NULL)
    return NULL;
  e = open_kind (ex, farm, kind, name, object, version, replace, err);
  if (e != NULL && df_farm_offline (farm))
    g_message ("export %s: opened from the local snapshot (offline: the "
               "farm DB is unreachable)", name);
  farm_release (ex, farm);
  return e;
}

DfExport *
df_exports_open (DfExports *ex, const char *name, GError **err)
{
  return exports_open (ex, name, false, err);
}

DfExport *
df_exports_open_replacing (DfExports *ex, const char *name, GError **err)
{
  return exports_open (ex, name, true, err);
}

void
df_export_close (DfExport *e)
{
  if (e == NULL)
    return;
  if (e->watch_id != 0)
    df_fence_unwatch (e->entry->fence, e->watch_id);
  if (e->entry != NULL)
    {
      CacheEntry *ce = e->entry;

      g_mutex_lock (&e->ex->lock);
      g_assert (ce->users > 0);
      if (--ce->users == 0)
        live_mark_drop_locked (e->ex, ce);
      /* The maintenance cache is released with its last session, so that
       * `version seal` (another process) can take it; a fenced one too,
       * so that a new entry can take its files; a leased one too, so
       * that its lease goes to whichever server the device uses next.
       * Released here, under the lock: an open that comes next must not
       * find the files still held (a persistent map's flock). */
      if (ce->users == 0
          && (ce->b->maint || ce->lease != NULL
              || df_fence_tripped (ce->fence))
          && g_hash_table_lookup (e->ex->caches, ce->b->device) == ce)
        {
          df_fence_trip_unused (ce->fence, "its last session closed");
          cache_entry_retire_locked (e->ex, ce, NULL);
        }
      g_mutex_unlock (&e->ex->lock);
      cache_entry_unref (ce);
    }
  df_blk_unref (e->blk);
  g_free (e->name);
  g_free (e->device);
  g_free (e->vdisk);
  g_free (e->description);
  g_free (e);
}

df_blk *
df_export_blk (DfExport *e)
{
  return e->blk;
}

const char *
df_export_name (DfExport *e)
{
  return e->name;
}

const char *
df_export_device (DfExport *e)
{
  return e->device;
}

bool
df_export_readonly (DfExport *e)
{
  return e->blk->readonly;
}

const char *
df_export_description (DfExport *e)
{
  return e->description;
}

char **
df_exports_list (DfExports *ex, GError **err)
{
  g_autoptr (GPtrArray) vdisks = NULL;
  GPtrArray *names;
  DfFarm *farm;

  if (ex->source.open != NULL)
    return g_new0 (char *, 1); /* a source lists nothing */
  farm = farm_acquire_read (ex, err);
  if (farm == NULL)
    return NULL;
  vdisks = df_farm_vdisk_list (farm, err);
  farm_release (ex, farm);
  if (vdisks == NULL)
    return NULL;
  names = g_ptr_array_new ();
  for (guint i = 0; i < vdisks->len; i++)
    {
      const DfVdisk *v = g_ptr_array_index (vdisks, i);

      g_ptr_array_add (names, g_strdup_printf ("vdisk/%s", v->name));
    }
  g_ptr_array_add (names, NULL);
  return (char **)g_ptr_array_free (names, FALSE);
}

/* One live cache as seen without the lock. */
typedef struct
{
  char *device;
  char *mode;
  df_blk *cache; /* owned ref: what flushes go through */
  df_blk *store; /* the write cache itself (in cache), for its figures */
} CacheSnap;

/* The write cache of ce (under its lease layer when leased). */
static df_blk *
entry_store (CacheEntry *ce)
{
  return ce->lease != NULL ? ce->cache->next : ce->cache;
}

static void
cache_snap_free (gpointer p)
{
  CacheSnap *cs = p;

  df_blk_unref (cs->cache);
  g_free (cs->device);
  g_free (cs->mode);
  g_free (cs);
}

/* Refs of every server-side cache in the registry (not the read-only
 * chains of modes without one, not retired ones), so callers can work
 * without the lock.  Returns a new
 * array (unref frees the refs). */
static GPtrArray *
cache_snapshot (DfExports *ex)
{
  GPtrArray *all = g_ptr_array_new_with_free_func (cache_snap_free);
  GHashTableIter it;
  gpointer value;

  g_mutex_lock (&ex->lock);
  g_hash_table_iter_init (&it, ex->caches);
  while (g_hash_table_iter_next (&it, NULL, &value))
    {
      CacheEntry *ce = value;
      CacheSnap *cs;

      if (ce->cache == NULL || !df_cache_is_cache (entry_store (ce)))
        continue;
      cs = g_new0 (CacheSnap, 1);
      cs->device = g_strdup (ce->b->device);
      cs->mode = g_strdup (ce->b->mode);
      cs->cache = df_blk_ref (ce->cache);
      cs->store = entry_store (ce);
      g_ptr_array_add (all, cs);
    }
  g_mutex_unlock (&ex->lock);
  return all;
}

void
df_exports_flush_all (DfExports *ex)
{
  g_autoptr (GPtrArray) all = cache_snapshot (ex);

  for (guint i = 0; i < all->len; i++)
    {
      CacheSnap *cs = g_ptr_array_index (all, i);
      int errnum = 0;

      if (df_blk_flush (cs->cache, &errnum) < 0)
        g_warning ("device %s: flushing the write cache failed: %s",
                   cs->device, g_strerror (errnum));
    }
}

void
df_exports_foreach_cache (DfExports *ex, df_cache_visit_fn fn, void *opaque)
{
  g_autoptr (GPtrArray) all = cache_snapshot (ex);

  for (guint i = 0; i < all->len; i++)
    {
      CacheSnap *cs = g_ptr_array_index (all, i);
      DfCacheStats st;

      df_cache_get_stats (cs->store, &st);
      fn (opaque, cs->device, cs->mode, &st);
    }
}

void
df_exports_metrics (DfExports *ex, GString *out)
{
  df_prom_family_header (out, "diskfarm_cache_lost_total", "counter",
                         "Opens of a device whose local write cache of this "
                         "boot generation is on another (dead) server: "
                         "served as a lost cache (every request fails).");
  g_string_append_printf (out, "diskfarm_cache_lost_total %d\n",
                          g_atomic_int_get (&ex->lost_caches));
  if (ex->keeper == NULL)
    return;
  df_prom_family_header (out, "diskfarm_cache_lease_takeovers_total",
                         "counter", "Shared write caches this server took "
                         "over from a server whose lease lapsed.");
  g_string_append_printf (out, "diskfarm_cache_lease_takeovers_total %"
                          G_GUINT64_FORMAT "\n",
                          df_lease_keeper_takeovers (ex->keeper));
  df_prom_family_header (out, "diskfarm_cache_lease_lost_total", "counter",
                         "Cache leases this server lost (not renewed in "
                         "time, or taken over): it stopped writing them.");
  g_string_append_printf (out, "diskfarm_cache_lease_lost_total %"
                          G_GUINT64_FORMAT "\n",
                          df_lease_keeper_losses (ex->keeper));
}

/* ---- bindings of live sessions ---------------------------------------- */

/* Entries with sessions and not yet fenced (new refs); tripped entries
 * without sessions leave the registry here. */
static GPtrArray *
live_entries (DfExports *ex)
{
  GPtrArray *live
      = g_ptr_array_new_with_free_func ((GDestroyNotify)cache_entry_unref);
  GHashTableIter it;
  gpointer value;

  g_mutex_lock (&ex->lock);
  g_hash_table_iter_init (&it, ex->caches);
  while (g_hash_table_iter_next (&it, NULL, &value))
    {
      CacheEntry *ce = value;

      if (df_fence_tripped (ce->fence) && ce->users == 0)
        g_hash_table_iter_remove (&it);
      else if (!df_fence_tripped (ce->fence) && ce->users > 0)
        g_ptr_array_add (live, cache_entry_ref (ce));
    }
  g_mutex_unlock (&ex->lock);
  return live;
}

void
df_exports_check (DfExports *ex)
{
  g_autoptr (GPtrArray) live = live_entries (ex);

  for (guint i = 0; i < live->len; i++)
    df_fence_check (((CacheEntry *) live->pdata[i])->fence);
}

static gpointer
checker_main (gpointer data)
{
  DfExports *ex = data;

  g_mutex_lock (&ex->check_lock);
  while (!ex->check_stop)
    {
      gint64 until = g_get_monotonic_time ()
                     + (df_farm_watch_live (ex->watch) ? CHECK_WATCHED_US
                                                       : CHECK_INTERVAL_US);

      while (!ex->check_stop && !ex->check_now
             && g_cond_wait_until (&ex->check_cond, &ex->check_lock, until))
        ;
      if (ex->check_stop)
        break;
      ex->check_now = false;
      g_mutex_unlock (&ex->check_lock);
      df_exports_check (ex);
      g_mutex_lock (&ex->check_lock);
    }
  g_mutex_unlock (&ex->check_lock);
  return NULL;
}

void
df_export_binding (DfExport *e, DfExportBinding *out)
{
  const Binding *b = e->entry != NULL ? e->entry->b : NULL;

  *out = (DfExportBinding) {
    .device = e->device,
    .generation = b != NULL ? b->generation : -1,
    .vdisk = e->vdisk,
    .version = e->version,
    .cache = b != NULL ? b->mode : NULL,
    .maintenance = b != NULL && b->maint,
  };
}

const char *
df_export_fence_reason (DfExport *e)
{
  return e->entry != NULL ? df_fence_reason (e->entry->fence) : NULL;
}

bool
df_export_moved (DfExport *e)
{
  return e->entry != NULL && df_fence_moved (e->entry->fence);
}

/* Stop reading only: the worker sees end of input and drops an idle
 * connection, while a request being refused right now (this very fence
 * check) still gets its error reply out before the close. */
static void
kick_shutdown (void *data)
{
  shutdown (GPOINTER_TO_INT (data), SHUT_RD);
}

void
df_export_shutdown_when_fenced (DfExport *e, int fd)
{
  g_assert (e->watch_id == 0 && fd >= 0);
  if (e->entry != NULL)
    e->watch_id = df_fence_watch (e->entry->fence, kick_shutdown,
                                  GINT_TO_POINTER (fd));
}

/* ---- NBD TLS ----------------------------------------------------------- */

static bool
denied (const char *name, const char *identity, GError **err)
{
  g_set_error (err, DF_ERROR, DF_ERROR_DENIED,
               "export '%s' is not open to TLS identity '%s'", name,
               identity != NULL ? identity : "(none)");
  return false;
}

/* Is mac (canonical) the MAC of the device named identity? */
static bool
identity_has_mac (DfExports *ex, const char *identity, const char *mac)
{
  DfFarm *farm = farm_acquire_read (ex, NULL);
  g_autoptr (DfNbdIdentity) id = NULL;

  if (farm == NULL)
    return false;
  id = df_farm_nbd_identity (farm, identity, NULL);
  farm_release (ex, farm);
  return id != NULL && g_ascii_strcasecmp (id->mac, mac) == 0;
}

bool
df_exports_authorize (DfExports *ex, const char *name, const char *identity,
                      GError **err)
{
  DfExportKind kind;
  g_autofree char *object = NULL;
  int version;
  char mac[18];

  if (!df_export_name_parse (name, &kind, &object, &version, NULL))
    return denied (name, identity, err);
  if (kind == DF_EXPORT_KIND_VDISK)
    return true;
  if (identity == NULL)
    return denied (name, identity, err);
  if (df_parse_mac (object, mac, NULL))
    return identity_has_mac (ex, identity, mac)
           || denied (name, identity, err);
  return g_ascii_strcasecmp (object, identity) == 0
         || denied (name, identity, err);
}

/* hex (64 digits, checked by the schema) -> key; false when malformed. */
static bool
psk_from_hex (const char *hex, uint8_t *key, size_t *len)
{
  size_t n = strlen (hex);

  if (n % 2 != 0 || n / 2 > DF_NBD_PSK_BYTES)
    return false;
  for (size_t i = 0; i < n; i += 2)
    {
      int hi = g_ascii_xdigit_value (hex[i]);
      int lo = g_ascii_xdigit_value (hex[i + 1]);
      if (hi < 0 || lo < 0)
        return false;
      key[i / 2] = (uint8_t) (hi << 4 | lo);
    }
  *len = n / 2;
  return true;
}

bool
df_exports_nbd_psk (void *opaque, const char *identity, uint8_t *key,
                    size_t *len)
{
  DfExports *ex = opaque;
  g_autoptr (GError) err = NULL;
  g_autoptr (DfNbdIdentity) id = NULL;
  DfFarm *farm = farm_acquire_read (ex, &err);

  if (farm == NULL)
    {
      g_warning ("NBD PSK of '%s': %s", identity, err->message);
      return false;
    }
  id = df_farm_nbd_identity (farm, identity, &err);
  farm_release (ex, farm);
  if (id == NULL && !g_error_matches (err, DF_ERROR, DF_ERROR_NOT_FOUND)
      && !g_error_matches (err, DF_ERROR, DF_ERROR_INVALID))
    g_warning ("NBD PSK of '%s': %s", identity, err->message);
  return id != NULL && id->psk_hex != NULL
         && psk_from_hex (id->psk_hex, key, len);
}

bool
df_exports_nbd_tls (DfExports *ex, DfTlsMode *mode, bool *set, GError **err)
{
  DfFarm *farm = farm_acquire_read (ex, err);
  bool ok;

  if (farm == NULL)
    return false;
  ok = df_farm_nbd_tls_get (farm, mode, set, err);
  farm_release (ex, farm);
  return ok;
}

/* ---- iSCSI ------------------------------------------------------------- */

DfChap *
df_exports_chap (DfExports *ex, const char *export_name, GError **err)
{
  DfExportKind kind;
  g_autofree char *object = NULL;
  int version;
  DfFarm *farm;
  DfChap *c;

  if (!df_export_name_parse (export_name, &kind, &object, &version, err))
    return NULL;
  if (kind == DF_EXPORT_KIND_VDISK)
    {
      c = g_new0 (DfChap, 1);
      return c;
    }
  farm = farm_acquire_read (ex, err);
  if (farm == NULL)
    return NULL;
  c = df_farm_chap_get (farm, object, err);
  farm_release (ex, farm);
  return c;
}

DfChap *
df_exports_chap_by_user (DfExports *ex, const char *user, GError **err)
{
  DfFarm *farm = farm_acquire_read (ex, err);
  DfChap *c;

  if (farm == NULL)
    return NULL;
  c = df_farm_chap_find_user (farm, user, err);
  farm_release (ex, farm);
  return c;
}

static bool
visible_collect (DfFarm *farm, const char *chap_user, GPtrArray *names,
                 GError **err)
{
  g_autoptr (GPtrArray) open = df_farm_chap_open_devices (farm, err);
  g_autoptr (GPtrArray) vdisks = NULL;

  if (open == NULL)
    return false;
  /* iscsi-chap required: no device target is open to list */
  if (df_farm_iscsi_chap_policy (farm) == DF_ISCSI_CHAP_REQUIRED)
    g_ptr_array_set_size (open, 0);
  for (guint i = 0; i < open->len; i++)
    g_ptr_array_add (names, g_strdup_printf ("device/%s",
                                             (char *) open->pdata[i]));
  if (chap_user != NULL)
    {
      g_autoptr (DfChap) c = df_farm_chap_find_user (farm, chap_user, NULL);
      if (c != NULL)
        g_ptr_array_add (names, g_strdup_printf ("device/%s", c->device));
    }
  vdisks = df_farm_vdisk_list (farm, err);
  if (vdisks == NULL)
    return false;
  for (guint i = 0; i < vdisks->len; i++)
    g_ptr_array_add (names, g_strdup_printf (
                                "vdisk/%s",
                                ((DfVdisk *) vdisks->pdata[i])->name));
  return true;
}

char **
df_exports_iscsi_visible (DfExports *ex, const char *chap_user, GError **err)
{
  DfFarm *farm = farm_acquire_read (ex, err);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  bool ok;

  if (farm == NULL)
    return NULL;
  ok = visible_collect (farm, chap_user, names, err);
  farm_release (ex, farm);
  if (!ok)
    return NULL;
  g_ptr_array_set_free_func (names, NULL);
  g_ptr_array_add (names, NULL);
  return (char **)g_ptr_array_free (g_steal_pointer (&names), FALSE);
}
