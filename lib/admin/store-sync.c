/* diskfarm: store sync from a peer's admin API (see store-sync.h). */
#include "store-sync.h"
#include "common.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const outcome_names[] = {
  [DF_SYNC_PRESENT] = "present",
  [DF_SYNC_COPIED] = "copied",
  [DF_SYNC_NO_SOURCE] = "no-source",
  [DF_SYNC_FAILED] = "failed",
};

const char *
df_sync_outcome_name (DfSyncOutcome o)
{
  g_assert ((guint) o < G_N_ELEMENTS (outcome_names));
  return outcome_names[o];
}

void
df_sync_item_free (DfSyncItem *it)
{
  if (!it)
    return;
  g_free (it->vdisk);
  g_free (it->from);
  g_free (it->error);
  g_free (it);
}

/* ---- the source --------------------------------------------------------- */

/* load a < load b: sessions / power, without division. */
static gint
by_load (gconstpointer pa, gconstpointer pb)
{
  const DfServer *a = *(DfServer *const *) pa;
  const DfServer *b = *(DfServer *const *) pb;
  gint64 la = a->load.sessions * b->power, lb = b->load.sessions * a->power;
  return la != lb ? (la < lb ? -1 : 1) : g_strcmp0 (a->name, b->name);
}

/* The healthy streamsvc peers (not self, only `from` when given), least
 * loaded first: a new array borrowing from servers. */
static GPtrArray *
peers (GPtrArray *servers, const DfSyncOptions *o)
{
  GPtrArray *out = g_ptr_array_new ();
  gint64 now = df_farm_now_ms ();
  for (guint i = 0; i < servers->len; i++)
    {
      DfServer *s = servers->pdata[i];
      if (g_strcmp0 (s->name, o->server) == 0
          || g_strcmp0 (s->kind, DF_SERVER_KIND_STREAM) != 0
          || (o->from && g_strcmp0 (s->name, o->from) != 0))
        continue;
      if (!o->from && df_server_state (s, now) != DF_SERVER_HEALTHY)
        continue;
      g_ptr_array_add (out, s);
    }
  g_ptr_array_sort (out, by_load);
  return out;
}

/* The first peer holding v verified, and its record (*rec, new). */
static const DfServer *
source_for (DfFarm *farm, GPtrArray *cands, const DfVersion *v,
            DfStoreRecord **rec, GError **err)
{
  for (guint i = 0; i < cands->len; i++)
    {
      const DfServer *s = cands->pdata[i];
      GError *e = NULL;
      DfStoreRecord *r = df_farm_store_state_get (farm, s->name, v->vdisk,
                                                  v->number, &e);
      if (e)
        {
          g_propagate_error (err, e);
          return NULL;
        }
      if (r && r->state == DF_STORE_VERIFIED)
        {
          *rec = r;
          return s;
        }
      df_store_record_free (r);
    }
  return NULL;
}

/* ---- one file ----------------------------------------------------------- */

/* Fetch into part (appending), check the hash, publish as final. */
static bool
fetch_file (const DfServer *peer, const DfVersion *v, const char *want_sha,
            const char *part, const char *final, const DfSyncOptions *o,
            DfSyncItem *it, GError **err)
{
  g_autofree char *path = g_strdup_printf ("/v1/store/%s/%d", v->vdisk,
                                           v->number);
  struct stat st;
  int fd = df_open_stat (part, O_RDWR | O_CREAT | O_CLOEXEC, 0640, &st, err);
  if (fd < 0)
    return false;
  it->resumed_at = st.st_size;
  gint64 t0 = g_get_monotonic_time (), size = 0;
  g_autoptr (DfAdminEndpoint) ep = df_admin_endpoint_new (
    peer->address, peer->admin_port, NULL, o->token);
  bool ok = df_admin_download (ep, path, fd, st.st_size, o->bwlimit,
                               o->progress, o->progress_data, &size, err);
  it->seconds = (double) (g_get_monotonic_time () - t0) / G_USEC_PER_SEC;
  it->size = size;
  it->bytes = ok ? size - it->resumed_at : 0;
  if (ok && fstat (fd, &st) == 0)
    it->bytes = st.st_size - it->resumed_at;
  close (fd);
  if (!ok)
    return false;
  char sha[65];
  if (!df_file_sha256 (part, sha, err))
    return false;
  if (g_ascii_strcasecmp (sha, want_sha) != 0)
    {
      unlink (part); /* a wrong copy is never resumed */
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "copy from %s has SHA-256 %s, not %s: discarded",
                   peer->name, sha, want_sha);
      return false;
    }
  return df_store_publish (-1, part, final, DF_PUBLISH_REPLACE, err);
}

/* What this server's record says of v, hashing the file when the record
 * is not "verified" yet (*state). */
static bool
local_state (DfFarm *farm, const DfSyncOptions *o, const DfVersion *v,
             DfStoreState *state, GError **err)
{
  GError *e = NULL;
  g_autoptr (DfStoreRecord) r = df_farm_store_state_get (farm, o->server,
                                                         v->vdisk, v->number,
                                                         &e);
  if (e)
    {
      g_propagate_error (err, e);
      return false;
    }
  if (r && r->state == DF_STORE_VERIFIED)
    {
      *state = r->state;
      return true;
    }
  return df_farm_store_verify (farm, o->server, v, state, NULL, err);
}

/* Copy v from the best peer into it; false only on a DB error. */
static bool
copy_version (DfFarm *farm, DfStore *store, GPtrArray *cands,
              const DfSyncOptions *o, const DfVersion *v, DfSyncItem *it,
              GError **err)
{
  g_autoptr (DfStoreRecord) rec = NULL;
  const DfServer *peer = source_for (farm, cands, v, &rec, err);
  if (!peer && err && *err)
    return false;
  if (!peer)
    {
      it->outcome = DF_SYNC_NO_SOURCE;
      it->error = g_strdup_printf ("no %s holds %s@%d verified",
                                   o->from ? o->from : "healthy peer",
                                   v->vdisk, v->number);
      return true;
    }
  it->from = g_strdup (peer->name);
  it->outcome = DF_SYNC_FAILED;
  if (rec->sha256 && g_ascii_strcasecmp (rec->sha256, v->sha256) != 0)
    {
      it->error = g_strdup_printf ("%s recorded SHA-256 %s, the version's "
                                   "is %s", peer->name, rec->sha256,
                                   v->sha256);
      return true;
    }
  g_autofree char *final = df_farm_version_path (farm, v->vdisk, v->number);
  g_autofree char *base = g_path_get_basename (final);
  g_autofree char *part = df_store_part_path (store, base);
  g_autoptr (GError) fe = NULL;
  if (!fetch_file (peer, v, v->sha256, part, final, o, it, &fe))
    {
      it->error = g_strdup (fe->message);
      return true;
    }
  it->outcome = DF_SYNC_COPIED;
  return df_farm_store_state_set (farm, o->server, v->vdisk, v->number,
                                  DF_STORE_VERIFIED, v->sha256, NULL, err);
}

/* New item for v, or NULL + err on a DB error. */
static DfSyncItem *
sync_version (DfFarm *farm, DfStore *store, GPtrArray *cands,
              const DfSyncOptions *o, const DfVersion *v, GError **err)
{
  DfSyncItem *it = g_new0 (DfSyncItem, 1);
  it->vdisk = g_strdup (v->vdisk);
  it->number = v->number;
  DfStoreState here = DF_STORE_MISSING;
  bool ok = local_state (farm, o, v, &here, err);
  if (ok && here != DF_STORE_VERIFIED)
    ok = copy_version (farm, store, cands, o, v, it, err);
  if (!ok)
    g_clear_pointer (&it, df_sync_item_free);
  return it; /* DF_SYNC_PRESENT when verified here already */
}

/* ---- one vDisk ------------------------------------------------------------ */

static bool
sync_vdisk (DfFarm *farm, GPtrArray *cands, const DfSyncOptions *o,
            const char *vdisk, GPtrArray *items, GError **err)
{
  g_autoptr (GPtrArray) vs = df_farm_version_list (farm, vdisk, err);
  if (!vs)
    return false;
  g_autofree char *dir = df_farm_store_dir (farm, vdisk);
  g_autoptr (DfStore) store = df_store_new (dir, vdisk);
  if (!df_store_lock (store, err))
    return false;
  for (guint i = 0; i < vs->len; i++)
    {
      const DfVersion *v = vs->pdata[i];
      if (!v->sha256)
        continue; /* an unsealed maintenance version has no file to copy */
      DfSyncItem *it = sync_version (farm, store, cands, o, v, err);
      if (!it)
        return false;
      g_ptr_array_add (items, it);
    }
  return true;
}

static bool
check_options (DfFarm *farm, const DfSyncOptions *o, GError **err)
{
  g_autoptr (DfServer) self = df_farm_server_get (farm, o->server, err);
  if (!self)
    {
      g_prefix_error (err, "this server: ");
      return false;
    }
  if (o->from)
    {
      g_autoptr (DfServer) peer = df_farm_server_get (farm, o->from, err);
      if (!peer)
        return false;
      if (g_strcmp0 (o->from, o->server) == 0)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                       "--from %s is this server", o->from);
          return false;
        }
    }
  g_autoptr (DfVdisk) vd = o->vdisk ? df_farm_vdisk_get (farm, o->vdisk, err)
                                    : NULL;
  return !o->vdisk || vd;
}

GPtrArray *
df_store_sync (DfFarm *farm, const DfSyncOptions *opts, GError **err)
{
  if (!check_options (farm, opts, err))
    return NULL;
  g_autoptr (DfSecret) token = opts->token ? NULL
                               : df_farm_admin_token (farm, false, NULL);
  DfSyncOptions own = *opts;
  if (!own.token)
    own.token = token;
  const DfSyncOptions *o = &own;
  g_autoptr (GPtrArray) servers = df_farm_server_list (farm, err);
  g_autoptr (GPtrArray) vdisks = servers ? df_farm_vdisk_list (farm, err)
                                         : NULL;
  if (!vdisks)
    return NULL;
  g_autoptr (GPtrArray) cands = peers (servers, o);
  g_autoptr (GPtrArray) items =
    g_ptr_array_new_with_free_func ((GDestroyNotify) df_sync_item_free);
  for (guint i = 0; i < vdisks->len; i++)
    {
      const DfVdisk *vd = vdisks->pdata[i];
      if (o->vdisk && g_strcmp0 (vd->name, o->vdisk) != 0)
        continue;
      if (!sync_vdisk (farm, cands, o, vd->name, items, err))
        return NULL;
    }
  return g_steal_pointer (&items);
}
