/* streamsvc: export names -> opened block stacks (see exports.h).
 *
 * The registry (DfExports) holds:
 *   chains: version file path -> df_blk (df_chain_open once, shared; the
 *           registry holds one ref, every user takes its own);
 *   caches: device name -> CacheEntry (one write cache per device and boot
 *           generation; one DfCache per device directory at any time).
 *           A device in cache mode hypervisor has an entry too, but no
 *           cache: its blk is the chain of the version the generation
 *           pinned, read-only (the hypervisor's qcow2 overlay takes the
 *           writes), so a promotion reaches it only at the next generation.
 * Both tables are protected by ex->lock, which is held for the whole of an
 * open so that two sessions of one device can never open two caches over
 * the same persistent files.
 *
 * Farm DB handles come from a small pool: a DfFarm is used by one thread
 * at a time, and pooling them keeps opens cheap (no SQLite open and
 * migration check per NBD connection).
 */
#include "exports.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "common.h"
#include "farm.h"

#define FARM_POOL_MAX 8
#define WHO "streamsvc"

/* One device cache.  Refcounted: the registry and every open DfExport hold
 * a ref.  users (open DfExports) is protected by ex->lock. */
typedef struct
{
  gint refcount;
  char *device;
  gint64 generation;
  char *vdisk;
  int version;
  char *mode; /* df_cache_mode_to_string */
  bool persistent;
  bool maint;    /* the maintenance version's cache in the store */
  bool hypervisor; /* no server-side cache: cache is the read-only chain */
  df_blk *cache; /* owned ref: the write cache, or the chain (hypervisor) */
  guint users;
} CacheEntry;

struct DfExports
{
  char *farm_dir;
  GMutex lock;
  GHashTable *chains; /* path -> df_blk* (owned ref) */
  GHashTable *caches; /* device name -> CacheEntry* (owned ref) */
  GMutex pool_lock;
  GPtrArray *farm_pool; /* idle DfFarm* */
};

struct DfExport
{
  DfExports *ex;
  char *name;   /* as requested */
  char *device; /* NULL for vdisk exports */
  char *description;
  df_blk *blk;       /* owned ref */
  CacheEntry *entry; /* owned ref; NULL for vdisk exports */
};

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
    farm = df_farm_open (ex->farm_dir, false, WHO, err);
  return farm;
}

/* Takes farm. */
static void
farm_release (DfExports *ex, DfFarm *farm)
{
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

/* ---- cache entries ---------------------------------------------------- */

static CacheEntry *
cache_entry_ref (CacheEntry *ce)
{
  g_atomic_int_inc (&ce->refcount);
  return ce;
}

static void
cache_entry_unref (CacheEntry *ce)
{
  if (ce == NULL || !g_atomic_int_dec_and_test (&ce->refcount))
    return;
  df_blk_unref (ce->cache);
  g_free (ce->device);
  g_free (ce->vdisk);
  g_free (ce->mode);
  g_free (ce);
}

/* ---- registry --------------------------------------------------------- */

DfExports *
df_exports_new (const char *farm_dir, GError **err)
{
  DfFarm *farm = df_farm_open (farm_dir, false, WHO, err);
  DfExports *ex;

  if (farm == NULL)
    return NULL;
  ex = g_new0 (DfExports, 1);
  ex->farm_dir = g_strdup (farm_dir);
  g_mutex_init (&ex->lock);
  g_mutex_init (&ex->pool_lock);
  ex->chains = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                      (GDestroyNotify)df_blk_unref);
  ex->caches = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                      (GDestroyNotify)cache_entry_unref);
  ex->farm_pool
      = g_ptr_array_new_with_free_func ((GDestroyNotify)df_farm_close);
  g_ptr_array_add (ex->farm_pool, farm);
  return ex;
}

void
df_exports_free (DfExports *ex)
{
  if (ex == NULL)
    return;
  df_exports_flush_all (ex);
  g_hash_table_destroy (ex->caches);
  g_hash_table_destroy (ex->chains);
  g_ptr_array_free (ex->farm_pool, TRUE);
  g_mutex_clear (&ex->lock);
  g_mutex_clear (&ex->pool_lock);
  g_free (ex->farm_dir);
  g_free (ex);
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

  if (number < 0)
    v = df_farm_version_for_type (farm, vdisk, "production", &cause);
  else
    v = df_farm_version_get (farm, vdisk, number, &cause);
  if (v == NULL)
    {
      resolve_error (name, cause, err);
      return NULL;
    }
  path = version_file_path (farm, v);
  g_mutex_lock (&ex->lock);
  chain = chain_get_locked (ex, path, err);
  g_mutex_unlock (&ex->lock);
  if (chain == NULL)
    return NULL;
  return export_new (ex, name, chain,
                     g_strdup_printf ("vdisk %s v%d (%s)", v->vdisk, v->number,
                                      df_version_state_name (v->state)));
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
  g_autofree char *name = g_strdup_printf ("%s.%d.maint", v->vdisk,
                                           v->number);
  mode->kind = DF_CACHE_PERSISTENT;
  mode->ram_limit = 0;
  return g_build_filename (store, name, NULL);
}

/* A new cache entry for dev's current generation.  Caller holds ex->lock.
 * Returns a new entry (refcount 1) or NULL + err. */
static CacheEntry *
cache_entry_open_locked (DfExports *ex, DfFarm *farm, const DfDevice *dev,
                         GError **err)
{
  g_autoptr (DfVersion) v = NULL;
  g_autofree char *base_path = NULL;
  g_autofree char *dir = NULL;
  g_autoptr (df_blk) chain = NULL;
  DfCacheMode mode;
  bool maint;
  df_blk *cache;
  CacheEntry *ce;
  GError *local = NULL;

  /* Scheduled promotions take effect at the first boot after their time. */
  if (!df_farm_versions_apply_pending (farm, dev->vdisk, NULL, &local))
    {
      g_warning ("vdisk %s: applying scheduled promotions: %s", dev->vdisk,
                 local->message);
      g_clear_error (&local);
    }
  v = df_farm_version_for_type (farm, dev->vdisk, dev->type, err);
  if (v == NULL)
    return NULL;
  dir = device_cache_dir (farm, dev, v, &mode, &maint, err);
  if (dir == NULL)
    return NULL;
  base_path = device_base_path (farm, v, err);
  if (base_path == NULL)
    return NULL;
  chain = chain_get_locked (ex, base_path, err);
  if (chain == NULL)
    return NULL;
  if (!maint && mode.kind == DF_CACHE_HYPERVISOR)
    cache = df_blk_ref (chain); /* read-only; nothing in dir */
  else
    cache = df_cache_open (chain, dir, &mode, dev->quota, &local);
  if (cache == NULL && maint
      && g_error_matches (local, DF_ERROR, DF_ERROR_BUSY))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "maintenance version %s@%d is already open (another "
                   "maintenance session, or a seal in progress)", v->vdisk,
                   v->number);
      g_error_free (local);
      return NULL;
    }
  if (cache == NULL)
    {
      g_propagate_error (err, local);
      return NULL;
    }
  ce = g_new0 (CacheEntry, 1);
  ce->refcount = 1;
  ce->device = g_strdup (dev->name);
  ce->generation = dev->generation;
  ce->vdisk = g_strdup (v->vdisk);
  ce->version = v->number;
  ce->mode = df_cache_mode_to_string (&mode);
  ce->persistent = df_cache_mode_is_persistent (&mode);
  ce->maint = maint;
  ce->hypervisor = !maint && mode.kind == DF_CACHE_HYPERVISOR;
  ce->cache = cache;
  return ce;
}

/* The registry's entry for dev, replaced when the boot generation moved
 * on.  A persistent cache still used by a session of an older generation
 * is never opened a second time: DF_ERROR_BUSY until it closes.
 * Caller holds ex->lock.  Returns a new ref (users counted) or NULL + err. */
static CacheEntry *
cache_entry_get_locked (DfExports *ex, DfFarm *farm, const DfDevice *dev,
                        GError **err)
{
  CacheEntry *old = g_hash_table_lookup (ex->caches, dev->name);
  CacheEntry *ce;

  if (old != NULL && old->maint && old->users > 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "maintenance version %s@%d is already open by another "
                   "session of device %s: one maintenance session at a time",
                   old->vdisk, old->version, dev->name);
      return NULL;
    }
  if (old != NULL && old->generation == dev->generation && !old->maint)
    ce = old;
  else
    {
      if (old != NULL && old->persistent && old->users > 0)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                       "device %s: persistent cache still in use by a "
                       "session of boot generation %" G_GINT64_FORMAT,
                       dev->name, old->generation);
          return NULL;
        }
      g_hash_table_remove (ex->caches, dev->name); /* sessions keep refs */
      ce = cache_entry_open_locked (ex, farm, dev, err);
      if (ce == NULL)
        return NULL;
      g_hash_table_insert (ex->caches, g_strdup (dev->name), ce);
    }
  ce->users++;
  return cache_entry_ref (ce);
}

/* device/<name> or device/<mac>. */
static DfExport *
open_device (DfExports *ex, DfFarm *farm, const char *name, const char *key,
             GError **err)
{
  GError *cause = NULL;
  g_autoptr (DfDevice) dev = df_farm_device_get (farm, key, &cause);
  CacheEntry *ce;
  DfExport *e;

  if (dev == NULL)
    {
      resolve_error (name, cause, err);
      return NULL;
    }
  g_mutex_lock (&ex->lock);
  ce = cache_entry_get_locked (ex, farm, dev, &cause);
  g_mutex_unlock (&ex->lock);
  if (ce == NULL)
    {
      resolve_error (name, cause, err);
      return NULL;
    }
  e = export_new (ex, name, df_blk_ref (ce->cache),
                  g_strdup_printf ("device %s cache %s%s gen %" G_GINT64_FORMAT
                                   ", vdisk %s v%d",
                                   ce->device, ce->mode,
                                   ce->hypervisor ? " (read-only)" : "",
                                   ce->generation, ce->vdisk, ce->version));
  e->device = g_strdup (ce->device);
  e->entry = ce;
  return e;
}

DfExport *
df_exports_open (DfExports *ex, const char *name, GError **err)
{
  DfExportKind kind;
  g_autofree char *object = NULL;
  int version;
  DfFarm *farm;
  DfExport *e;

  if (!df_export_name_parse (name, &kind, &object, &version, err))
    return NULL;
  farm = farm_acquire (ex, err);
  if (farm == NULL)
    return NULL;
  if (kind == DF_EXPORT_KIND_VDISK)
    e = open_vdisk (ex, farm, name, object, version, err);
  else
    e = open_device (ex, farm, name, object, err);
  farm_release (ex, farm);
  return e;
}

void
df_export_close (DfExport *e)
{
  if (e == NULL)
    return;
  if (e->entry != NULL)
    {
      g_mutex_lock (&e->ex->lock);
      g_assert (e->entry->users > 0);
      e->entry->users--;
      /* The maintenance cache is released with its last session, so that
       * `version seal` (another process) can take it. */
      if (e->entry->users == 0 && e->entry->maint
          && g_hash_table_lookup (e->ex->caches, e->entry->device)
                 == e->entry)
        g_hash_table_remove (e->ex->caches, e->entry->device);
      g_mutex_unlock (&e->ex->lock);
      cache_entry_unref (e->entry);
    }
  df_blk_unref (e->blk);
  g_free (e->name);
  g_free (e->device);
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
  DfFarm *farm = farm_acquire (ex, err);
  g_autoptr (GPtrArray) vdisks = NULL;
  GPtrArray *names;

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

/* Refs of every registry cache entry, so callers can work without the
 * lock.  Returns a new array (unref frees the refs). */
static GPtrArray *
cache_entries_snapshot (DfExports *ex)
{
  GPtrArray *all
      = g_ptr_array_new_with_free_func ((GDestroyNotify)cache_entry_unref);
  GHashTableIter it;
  gpointer value;

  g_mutex_lock (&ex->lock);
  g_hash_table_iter_init (&it, ex->caches);
  while (g_hash_table_iter_next (&it, NULL, &value))
    g_ptr_array_add (all, cache_entry_ref (value));
  g_mutex_unlock (&ex->lock);
  return all;
}

void
df_exports_flush_all (DfExports *ex)
{
  g_autoptr (GPtrArray) all = cache_entries_snapshot (ex);

  for (guint i = 0; i < all->len; i++)
    {
      CacheEntry *ce = g_ptr_array_index (all, i);
      int errnum = 0;

      if (ce->hypervisor)
        continue;
      if (df_blk_flush (ce->cache, &errnum) < 0)
        g_warning ("device %s: flushing the write cache failed: %s",
                   ce->device, g_strerror (errnum));
    }
}

void
df_exports_foreach_cache (DfExports *ex, df_cache_visit_fn fn, void *opaque)
{
  g_autoptr (GPtrArray) all = cache_entries_snapshot (ex);

  for (guint i = 0; i < all->len; i++)
    {
      CacheEntry *ce = g_ptr_array_index (all, i);
      DfCacheStats st;

      if (ce->hypervisor) /* no cache on this server */
        continue;
      df_cache_get_stats (ce->cache, &st);
      fn (opaque, ce->device, ce->mode, &st);
    }
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
  farm = farm_acquire (ex, err);
  if (farm == NULL)
    return NULL;
  c = df_farm_chap_get (farm, object, err);
  farm_release (ex, farm);
  return c;
}

DfChap *
df_exports_chap_by_user (DfExports *ex, const char *user, GError **err)
{
  DfFarm *farm = farm_acquire (ex, err);
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
  DfFarm *farm = farm_acquire (ex, err);
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

bool
df_export_is_current (DfExport *e, GError **err)
{
  DfFarm *farm;
  g_autoptr (DfChap) c = NULL;

  if (e->entry == NULL)
    return true;
  farm = farm_acquire (e->ex, err);
  if (farm == NULL)
    return false;
  c = df_farm_chap_get (farm, e->entry->device, err);
  farm_release (e->ex, farm);
  if (c == NULL)
    return false;
  if (c->generation != e->entry->generation)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "device %s was reset (boot generation %" G_GINT64_FORMAT
                   " -> %" G_GINT64_FORMAT ")",
                   e->entry->device, e->entry->generation, c->generation);
      return false;
    }
  return true;
}
