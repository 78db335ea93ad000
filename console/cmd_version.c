/* diskfarm console: `version new|seal|promote|revert|delete|list|merge|diff`.
 *
 * The store and its crash-safety protocol (lock, sweep, temp file,
 * publish, the DISKFARM_TEST_CRASH_AT hook) are lib/vdisk's DfStore
 * (store.h); each command here takes the store's lock, sweeps, does its
 * work and records it in one DB transaction. */
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef DF_HAVE_GUESTFS
#include <guestfs.h>
#endif


/* ---- small helpers ---------------------------------------------------- */

static bool
parse_number (const char *what, const char *s, int *out, GError **err)
{
  guint64 n = 0;
  g_autoptr (GError) local = NULL;
  if (!g_ascii_string_to_unsigned (s, 10, 0, G_MAXINT, &n, &local))
    {
      df_usage_error (err, "%s '%s': %s", what, s, local->message);
      return false;
    }
  *out = (int) n;
  return true;
}

static char *
version_path (DfFarm *farm, const DfVersion *v)
{
  g_autofree char *store = df_farm_store_dir (farm, v->vdisk);
  return g_build_filename (store, v->file, NULL);
}

static DfVersion *
find_number (GPtrArray *versions, int number)
{
  for (guint i = 0; i < versions->len; i++)
    if (((DfVersion *) versions->pdata[i])->number == number)
      return versions->pdata[i];
  return NULL;
}

static int
max_number (GPtrArray *versions)
{
  int n = -1;
  for (guint i = 0; i < versions->len; i++)
    n = MAX (n, ((DfVersion *) versions->pdata[i])->number);
  return n;
}

/* Newest sealed (non-maintenance) version, or NULL (borrowed). */
static DfVersion *
newest_sealed (GPtrArray *versions)
{
  DfVersion *best = NULL;
  for (guint i = 0; i < versions->len; i++)
    {
      DfVersion *v = versions->pdata[i];
      if (v->state != DF_VSTATE_MAINTENANCE
          && (!best || v->number > best->number))
        best = v;
    }
  return best;
}

static DfVersion *
maintenance_version (GPtrArray *versions)
{
  for (guint i = 0; i < versions->len; i++)
    if (((DfVersion *) versions->pdata[i])->state == DF_VSTATE_MAINTENANCE)
      return versions->pdata[i];
  return NULL;
}

/* Versions from v down to its base (borrowed pointers, top first). */
static GPtrArray *
chain_of (GPtrArray *versions, DfVersion *v)
{
  GPtrArray *chain = g_ptr_array_new ();
  for (DfVersion *p = v; p; p = p->parent >= 0 ? find_number (versions,
                                                               p->parent)
                                                : NULL)
    {
      g_ptr_array_add (chain, p);
      if (chain->len > versions->len)
        break;                   /* a loop: the DB forbids it, be safe */
    }
  return chain;
}

/* End the df_farm_begin transaction of a version step: roll back when the
 * step's DB work failed (!ok, err already set); else crash point
 * "<step>-in-tx", commit, crash point "<step>-committed". */
static bool
tx_finish (DfFarm *farm, const char *step, bool ok, GError **err)
{
  if (!ok)
    {
      df_farm_rollback (farm);
      return false;
    }
  g_autofree char *in_tx = g_strdup_printf ("%s-in-tx", step);
  g_autofree char *committed = g_strdup_printf ("%s-committed", step);
  df_store_crash_point (in_tx);
  if (!df_farm_commit (farm, err))
    return false;
  df_store_crash_point (committed);
  return true;
}

/* ---- the per-vdisk lock and leftovers of interrupted commands ---------- */

/* Under the store's lock: remove what interrupted commands left. */
static bool
sweep_store (DfStore *store, GPtrArray *versions, GError **err)
{
  g_autofree int *numbers = g_new0 (int, versions->len + 1);
  int maint = -1;
  for (guint i = 0; i < versions->len; i++)
    {
      DfVersion *v = versions->pdata[i];
      numbers[i] = v->number;
      if (v->state == DF_VSTATE_MAINTENANCE)
        maint = v->number;
    }
  return df_store_sweep (store, numbers, versions->len, maint, err);
}

/* Everything a version command starts with: farm, due schedules applied,
 * the lock, leftovers removed, the version rows. */
typedef struct {
  DfFarm *farm;
  DfVdisk *vdisk;
  GPtrArray *versions;
  DfStore *store;        /* locked when the job changes the store */
} VJob;

static void
vjob_clear (VJob *j)
{
  g_clear_pointer (&j->versions, g_ptr_array_unref);
  g_clear_pointer (&j->vdisk, df_vdisk_free);
  g_clear_pointer (&j->store, df_store_free);
  g_clear_pointer (&j->farm, df_farm_close);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (VJob, vjob_clear)

static bool
vjob_reload (VJob *j, GError **err)
{
  g_clear_pointer (&j->versions, g_ptr_array_unref);
  j->versions = df_farm_version_list (j->farm, j->vdisk->name, err);
  return j->versions != NULL;
}

static bool
vjob_open (DfCtx *ctx, const char *vdisk, bool mutate, VJob *j, GError **err)
{
  j->farm = df_ctx_open_farm (ctx, false, err);
  if (!j->farm)
    return false;
  j->vdisk = df_farm_vdisk_get (j->farm, vdisk, err);
  if (!j->vdisk
      || !df_farm_versions_apply_pending (j->farm, vdisk, NULL, err))
    return false;
  g_autofree char *dir = df_farm_store_dir (j->farm, vdisk);
  j->store = df_store_new (dir, vdisk);
  if (mutate && !df_store_lock (j->store, err))
    return false;
  if (!vjob_reload (j, err))
    return false;
  return !mutate || sweep_store (j->store, j->versions, err);
}

/* ---- live sessions from streamsvc's admin HTTP ------------------------ */

/* The version number a live session of vdisk reads, or -1 when it is not
 * one of vdisk's: "vdisk"/"version" when streamsvc reports them, else its
 * export: vdisk/<v>@N is N; vdisk/<v> and device sessions count on the
 * version their type selects now. */
static int
session_version (DfFarm *farm, const char *vdisk, const DfLiveSession *s)
{
  if (s->version >= 0 && s->vdisk)
    return strcmp (s->vdisk, vdisk) == 0 ? (int) s->version : -1;
  g_autofree char *prefix = g_strdup_printf ("vdisk/%s", vdisk);
  const char *exp = s->export;
  int number = -1;
  g_autoptr (DfVersion) v = NULL;
  if (exp && g_str_has_prefix (exp, prefix) && exp[strlen (prefix)] == '@')
    parse_number ("n", exp + strlen (prefix) + 1, &number, NULL);
  else if (g_strcmp0 (exp, prefix) == 0)
    v = df_farm_version_for_type (farm, vdisk, "production", NULL);
  else if (s->device)
    {
      g_autoptr (DfDevice) d = df_farm_device_get (farm, s->device, NULL);
      if (d && strcmp (d->vdisk, vdisk) == 0)
        v = df_farm_version_for_type (farm, vdisk, d->type, NULL);
    }
  return v ? v->number : number;
}

/* Live sessions per version number of vdisk, from every server of this
 * farm (df_ctx_live: another farm's servers are ignored with a warning):
 * the table number -> count, or NULL when no server could be asked. */
static GHashTable *
live_sessions (DfCtx *ctx, DfFarm *farm, const char *vdisk)
{
  g_autoptr (DfLive) live = df_ctx_live (ctx, farm, NULL);
  if (live == NULL || df_live_unknown (live))
    return NULL;
  GHashTable *counts = g_hash_table_new (g_direct_hash, g_direct_equal);
  for (guint i = 0; i < live->sessions->len; i++)
    {
      int number = session_version (farm, vdisk, live->sessions->pdata[i]);
      if (number < 0)
        continue;
      gpointer key = GINT_TO_POINTER (number);
      g_hash_table_insert (counts, key, GINT_TO_POINTER (
        GPOINTER_TO_INT (g_hash_table_lookup (counts, key)) + 1));
    }
  return counts;
}

/* Refuse a new maintenance version while a maintenance device of vdisk is
 * live: the new version's boot generation would pull its disk away. */
static bool
check_maintenance_not_live (DfCtx *ctx, DfFarm *farm, const char *vdisk,
                            bool force, GError **err)
{
  g_autoptr (GPtrArray) devices = df_farm_device_list (farm, NULL, err);
  if (devices == NULL)
    return false;
  g_autofree char *what = g_strdup_printf ("vdisk %s: maintenance ", vdisk);
  g_autoptr (DfLive) live = NULL;
  for (guint i = 0; i < devices->len; i++)
    {
      const DfDevice *d = devices->pdata[i];
      if (strcmp (d->vdisk, vdisk) != 0
          || strcmp (d->type, "maintenance") != 0)
        continue;
      if (live == NULL && !(live = df_ctx_live (ctx, farm, err)))
        return false;
      if (!df_ctx_check_not_live (live, d, force, what, err))
        return false;
    }
  return true;
}

/* ---- new -------------------------------------------------------------- */

static DfRecord *
version_result (const DfVersion *v, const char *action)
{
  DfRecord *r = df_record_new ();
  df_record_str (r, "action", "action", action);
  df_record_str (r, "vdisk", "vdisk", v->vdisk);
  df_record_int (r, "version", "version", v->number);
  df_record_opt_int (r, "parent", "parent", v->parent >= 0, v->parent);
  df_record_str (r, "state", "state", df_version_state_name (v->state));
  df_record_str (r, "file", "file", v->file);
  df_record_size (r, "file_size", "size", v->file_size);
  df_record_str (r, "sha256", "sha256", v->sha256);
  df_record_str (r, "pending_state", NULL, v->pending_state);
  df_record_str (r, "pending_at", NULL, v->pending_at);
  return r;
}

/* Print the row (vdisk, number) as it is now in the DB. */
static bool
print_version (VJob *j, int number, const char *action, bool json,
               const char *fmt_people, GError **err)
{
  g_autoptr (DfVersion) v = df_farm_version_get (j->farm, j->vdisk->name,
                                                 number, err);
  if (!v)
    return false;
  g_autoptr (DfRecord) r = version_result (v, action);
  df_print_result (r, json, fmt_people, v->vdisk, v->number,
                   df_version_state_name (v->state));
  return true;
}

static bool
version_new (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version new", "VDISK", 1, 1,
    "Create a maintenance version on top of the newest version.  The "
    "maintenance device assigned to the vDisk boots it read-write (its "
    "writes go to <store>/<vdisk>/<vdisk>.<N>.maint/) until `version seal`: "
    "the new version starts a new boot generation for that device, in the "
    "same transaction.  Refused while the maintenance device is live on a "
    "stream server of the farm, unless --force (its server then fences the "
    "session); when no server can be asked, goes ahead with a warning.",
    "  diskfarm version new win10\n  diskfarm version new win10 --force\n",
  };
  gboolean force = FALSE;
  const GOptionEntry entries[] = {
    { "force", 0, 0, G_OPTION_ARG_NONE, &force,
      "Go ahead even while the maintenance device is live", NULL },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  g_auto (VJob) j = { 0 };
  if (!vjob_open (ctx, argv[1], true, &j, err))
    return false;
  DfVersion *m = maintenance_version (j.versions);
  if (m)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "vdisk '%s' already has maintenance version %d (seal or "
                   "delete it first)", m->vdisk, m->number);
      return false;
    }
  DfVersion *parent = newest_sealed (j.versions);
  int number = max_number (j.versions) + 1;
  g_autofree char *file = df_store_layer_name (j.vdisk->name, number);
  if (!parent
      || !check_maintenance_not_live (ctx, j.farm, j.vdisk->name, force, err)
      || !df_farm_version_add (j.farm, j.vdisk->name, number, parent->number,
                               file, NULL, parent->virtual_size, 0,
                               DF_VSTATE_MAINTENANCE, err))
    {
      if (!parent)
        g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                     "vdisk '%s' has no sealed version", j.vdisk->name);
      return false;
    }
  return print_version (&j, number, "new", ctx->json,
                        "vdisk %s: maintenance version %d created (%s)", err);
}

/* ---- merge (also used by seal's automatic merge) ----------------------- */

typedef struct {
  int from, to;          /* version numbers; from = -1: the whole chain */
  const char *state;     /* state of the new version, NULL: that of `to` */
} MergeReq;

/* Write the merged file and record it as version *out_number. */
static bool
merge_run (VJob *j, const MergeReq *req, int *out_number, GError **err)
{
  const char *vd = j->vdisk->name;
  DfVersion *to = find_number (j->versions, req->to);
  DfVersion *top = newest_sealed (j->versions);
  if (!to || to->state == DF_VSTATE_MAINTENANCE || to != top)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "vdisk '%s': a merge ends at the newest sealed version "
                   "(%d), not at %d", vd, top ? top->number : -1, req->to);
      return false;
    }
  g_autoptr (GPtrArray) chain = chain_of (j->versions, to);
  guint n_layers = 0;
  for (guint i = 0; i < chain->len && !n_layers; i++)
    if (((DfVersion *) chain->pdata[i])->number == req->from)
      n_layers = i + 1;
  if (req->from < 0)
    n_layers = chain->len;
  if (n_layers == 0 || (n_layers == 1 && chain->len > 1))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   n_layers ? "vdisk '%s': %d..%d is one layer, nothing to "
                              "merge"
                            : "vdisk '%s': version %d is not in the chain of "
                              "version %d", vd, req->from, req->to);
      return false;
    }
  DfVersionState state = to->state;
  if (req->state && !df_version_state_parse (req->state, &state, err))
    return false;
  DfVersion *below = n_layers < chain->len ? chain->pdata[n_layers] : NULL;
  int number = max_number (j->versions) + 1;
  g_autofree char *file = df_store_layer_name (vd, number);
  g_autofree char *tmp = df_store_tmp_path (j->store, number);
  g_autofree char *top_path = version_path (j->farm, to);
  g_autofree char *final = df_farm_version_path (j->farm, vd, number);
  DfProgress progress;
  df_progress_init (&progress, below ? "merging updates" : "merging base");
  char sha[65];
  df_interrupt_begin ();   /* Ctrl-C: the .tmp in the store is removed */
  bool ok = df_vdisk_merge_layers_sha256 (top_path, n_layers, tmp,
                                          below ? below->file : NULL,
                                          df_progress_update, &progress, sha,
                                          err);
  df_interrupt_end ();
  df_progress_end (&progress);
  if (!ok)
    return false;
  uint64_t size;
  if (!df_store_publish_layer ("merge", tmp, final, true, sha, &size, err))
    return false;
  g_autofree char *object = g_strdup_printf ("%s@%d", vd, number);
  g_autofree char *detail = g_strdup_printf (
    "{\"kind\":\"%s\",\"from\":%d,\"to\":%d,\"layers\":%u}",
    below ? "updates" : "base",
    ((DfVersion *) chain->pdata[n_layers - 1])->number, to->number, n_layers);
  if (!df_farm_begin (j->farm, err))
    return false;
  ok = df_farm_version_add (j->farm, vd, number, below ? below->number : -1,
                            file, sha, to->virtual_size, size, state, err)
       && df_farm_audit (j->farm, "version.merge", object, detail, err);
  if (!tx_finish (j->farm, "merge", ok, err))
    return false;
  *out_number = number;
  return vjob_reload (j, err);
}

/* "FROM..TO" */
static bool
parse_range (const char *s, int *from, int *to, GError **err)
{
  const char *dots = strstr (s, "..");
  if (!dots)
    {
      df_usage_error (err, "--updates takes FROM..TO, not '%s'", s);
      return false;
    }
  g_autofree char *a = g_strndup (s, (gsize) (dots - s));
  return parse_number ("FROM", a, from, err)
         && parse_number ("TO", dots + 2, to, err);
}

static bool
version_merge (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version merge", "VDISK", 1, 1,
    "Merge versions into a new version with the same content as the newest "
    "sealed version: --updates FROM..TO writes one layer replacing FROM..TO "
    "(backed by FROM's parent); --base writes a new standalone base.  The "
    "new version takes the state of TO unless --state says otherwise.  Old "
    "versions stay until `version delete` (refused while anything uses "
    "them).",
    "  diskfarm version merge win10 --updates 1..4\n"
    "  diskfarm version merge win10 --base\n",
  };
  g_autofree char *updates = NULL, *state = NULL;
  gboolean base = FALSE;
  const GOptionEntry entries[] = {
    { "updates", 0, 0, G_OPTION_ARG_STRING, &updates,
      "Merge versions FROM..TO into one updates layer", "FROM..TO" },
    { "base", 0, 0, G_OPTION_ARG_NONE, &base,
      "Merge the whole chain into a new standalone base", NULL },
    { "state", 0, 0, G_OPTION_ARG_STRING, &state,
      "State of the new version: test or production (default: that of TO)",
      "STATE" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  MergeReq req = { -1, -1, state };
  if (!!updates == !!base)
    {
      df_usage_error (err, "give exactly one of --updates FROM..TO and "
                      "--base");
      return false;
    }
  if (state && strcmp (state, "test") && strcmp (state, "production"))
    {
      df_usage_error (err, "--state must be test or production");
      return false;
    }
  if (updates && !parse_range (updates, &req.from, &req.to, err))
    return false;
  g_auto (VJob) j = { 0 };
  if (!vjob_open (ctx, argv[1], true, &j, err))
    return false;
  if (base)
    {
      DfVersion *top = newest_sealed (j.versions);
      req.to = top ? top->number : -1;
    }
  int number;
  return merge_run (&j, &req, &number, err)
         && print_version (&j, number, "merge", ctx->json,
                           "vdisk %s: merged into version %d (%s)", err);
}

/* ---- seal ------------------------------------------------------------- */

/* After a seal: merge the updates into one layer when the chain of the new
 * version is deeper than the configured depth.  *merged: new number or -1. */
static bool
maybe_auto_merge (VJob *j, int sealed, int *merged, GError **err)
{
  *merged = -1;
  int depth = df_farm_auto_merge_depth (j->farm, j->vdisk->name, NULL);
  DfVersion *v = find_number (j->versions, sealed);
  g_autoptr (GPtrArray) chain = chain_of (j->versions, v);
  if (depth < 2 || (int) chain->len <= depth)
    return true;
  MergeReq req = { ((DfVersion *) chain->pdata[chain->len - 2])->number,
                   sealed, NULL };
  g_message ("vdisk %s: chain depth %u is past %d: merging updates %d..%d",
             j->vdisk->name, chain->len, depth, req.from, req.to);
  return merge_run (j, &req, merged, err);
}

/* Write the layer and record it; the .maint cache stays open (flock) until
 * the DB says sealed, so no session can start writing meanwhile. */
static bool
seal_write (VJob *j, DfVersion *m, GError **err)
{
  const char *vd = j->vdisk->name;
  DfVersion *parent = find_number (j->versions, m->parent);
  g_autofree char *parent_path = version_path (j->farm, parent);
  g_autofree char *maint = df_store_maint_path (df_store_dir (j->store), vd,
                                                m->number);
  g_autofree char *tmp = df_store_tmp_path (j->store, m->number);
  g_autofree char *final = version_path (j->farm, m);
  g_autoptr (df_blk) base = df_chain_open (parent_path, DF_FMT_UNKNOWN, err);
  if (!base)
    return false;
  /* A file left by a seal killed before its DB commit is redone. */
  if (g_unlink (final) != 0 && errno != ENOENT)
    {
      df_set_error_errno (err, errno, "remove %s", final);
      return false;
    }
  DfProgress progress;
  df_progress_init (&progress, "sealing");
  uint64_t written = 0;
  df_interrupt_begin ();   /* Ctrl-C: the .tmp in the store is removed */
  bool ok = df_vdisk_seal_layer (base, maint, tmp, parent->file,
                                 df_progress_update, &progress, &written,
                                 err);
  df_interrupt_end ();
  df_progress_end (&progress);
  if (!ok)
    return false;
  char sha[65];
  uint64_t size;
  if (!df_store_publish_layer ("seal", tmp, final, false, sha, &size, err))
    return false;
  if (!df_farm_begin (j->farm, err))
    return false;
  ok = df_farm_version_seal (j->farm, vd, m->number, sha, size, err);
  if (!tx_finish (j->farm, "seal", ok, err))
    return false;
  return df_store_remove_maint (maint, err);
}

static bool
version_seal (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version seal", "VDISK", 1, 1,
    "Write the maintenance version's writes as a new immutable qcow2 layer "
    "(backing file: the previous version), record its SHA-256 and put it in "
    "state test.  Refused while a maintenance session is running.  When the "
    "chain becomes deeper than the auto-merge depth (vdisk set "
    "--auto-merge-depth), the updates are merged into one new version.",
    "  diskfarm version seal win10\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_auto (VJob) j = { 0 };
  if (!vjob_open (ctx, argv[1], true, &j, err))
    return false;
  DfVersion *m = maintenance_version (j.versions);
  if (!m)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no maintenance version (create one with "
                   "'diskfarm version new %s')", j.vdisk->name,
                   j.vdisk->name);
      return false;
    }
  int number = m->number, merged = -1;
  if (!seal_write (&j, m, err) || !vjob_reload (&j, err)
      || !maybe_auto_merge (&j, number, &merged, err))
    return false;
  if (merged >= 0 && !ctx->json)
    printf ("vdisk %s: chain past the auto-merge depth, merged into "
            "version %d\n", j.vdisk->name, merged);
  return print_version (&j, number, "seal", ctx->json,
                        "vdisk %s: version %d sealed (%s)", err);
}

/* ---- promote / revert ------------------------------------------------- */

static char *
parse_when (const char *s, GError **err)
{
  return df_parse_when ("--at", s, err);
}

static bool
version_promote (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version promote", "VDISK N", 2, 2,
    "Move sealed version N to test or production.  With --at TIME the "
    "version is pending (booted by nobody) until TIME, then it takes the "
    "new state: streamsvc applies it at the first device boot after TIME, "
    "and so does any `diskfarm version` command.  Running targets keep "
    "their version until their next boot.",
    "  diskfarm version promote win10 3 --to production\n"
    "  diskfarm version promote win10 3 --to production --at "
    "'2026-12-01 02:00'\n",
  };
  g_autofree char *to = NULL, *at = NULL;
  const GOptionEntry entries[] = {
    { "to", 0, 0, G_OPTION_ARG_STRING, &to, "test or production", "STATE" },
    { "at", 0, 0, G_OPTION_ARG_STRING, &at,
      "Schedule the promotion (ISO 8601, local time without a zone)",
      "TIME" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  DfVersionState target;
  int number;
  if (!to || (strcmp (to, "test") && strcmp (to, "production")))
    {
      df_usage_error (err, "--to test or --to production is required");
      return false;
    }
  g_autofree char *when = at ? parse_when (at, err) : NULL;
  if ((at && !when) || !parse_number ("version", argv[2], &number, err)
      || !df_version_state_parse (to, &target, err))
    return false;
  g_auto (VJob) j = { 0 };
  if (!vjob_open (ctx, argv[1], true, &j, err))
    return false;
  df_store_crash_point ("promote-begin");
  if (!df_farm_begin (j.farm, err))
    return false;
  bool ok = when ? df_farm_version_schedule (j.farm, j.vdisk->name, number,
                                             target, when, err)
                 : df_farm_version_set_state (j.farm, j.vdisk->name, number,
                                              target, err);
  if (!tx_finish (j.farm, "promote", ok, err))
    return false;
  if (!df_farm_versions_apply_pending (j.farm, j.vdisk->name, NULL, err))
    return false;
  return print_version (&j, number, "promote", ctx->json,
                        "vdisk %s: version %d is now %s", err);
}

static bool
version_revert (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version revert", "VDISK", 1, 1,
    "Roll production back at once: the newest production version returns "
    "to test, so production devices boot the previous production version "
    "at their next boot.",
    "  diskfarm version revert win10\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_auto (VJob) j = { 0 };
  if (!vjob_open (ctx, argv[1], true, &j, err))
    return false;
  DfVersion *cur = NULL, *prev = NULL;
  for (guint i = 0; i < j.versions->len; i++)
    {
      DfVersion *v = j.versions->pdata[i];
      if (v->state != DF_VSTATE_PRODUCTION)
        continue;
      if (!cur || v->number > cur->number)
        prev = cur, cur = v;
      else if (!prev || v->number > prev->number)
        prev = v;
    }
  if (!cur || !prev)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no earlier production version to go back "
                   "to", j.vdisk->name);
      return false;
    }
  int number = cur->number, back = prev->number;
  g_autofree char *object = g_strdup_printf ("%s@%d", j.vdisk->name, number);
  g_autofree char *detail = g_strdup_printf ("{\"production\":%d}", back);
  if (!df_farm_begin (j.farm, err))
    return false;
  if (!df_farm_version_set_state (j.farm, j.vdisk->name, number,
                                  DF_VSTATE_TEST, err)
      || !df_farm_audit (j.farm, "version.revert", object, detail, err))
    {
      df_farm_rollback (j.farm);
      return false;
    }
  if (!df_farm_commit (j.farm, err))
    return false;
  return print_version (&j, back, "revert", ctx->json,
                        "vdisk %s: production is version %d again (%s)", err);
}

/* ---- delete ----------------------------------------------------------- */

/* Delete an unsealed maintenance version: its row, then its cache. */
static bool
delete_maintenance (VJob *j, DfVersion *m, GError **err)
{
  g_autofree char *maint = df_store_maint_path (df_store_dir (j->store),
                                                m->vdisk, m->number);
  g_autofree char *what = g_strdup_printf ("maintenance version %s@%d",
                                           m->vdisk, m->number);
  int fd;
  if (!df_store_maint_claim (maint, what, &fd, err))
    return false;
  bool ok = df_farm_version_delete (j->farm, m->vdisk, m->number, err);
  if (fd >= 0)
    close (fd);
  return ok && df_store_remove_maint (maint, err);
}

static bool
version_delete (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version delete", "VDISK N", 2, 2,
    "Delete version N and its file.  Refused while a device boots it, a "
    "promotion is pending on it, another version is stacked on it, or a "
    "live session uses it (asked to the farm's stream servers and --admin: "
    "$DISKFARM_ADMIN, diskfarm.conf [console] admin, default "
    DF_ADMIN_DEFAULT_LISTEN ").  Deleting the maintenance version throws its "
    "writes away.",
    "  diskfarm version delete win10 2\n",
  };
  int number;
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err)
      || !parse_number ("version", argv[2], &number, err))
    return false;
  g_auto (VJob) j = { 0 };
  if (!vjob_open (ctx, argv[1], true, &j, err))
    return false;
  DfVersion *v = find_number (j.versions, number);
  if (!v)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no version %d", j.vdisk->name, number);
      return false;
    }
  g_autoptr (DfRecord) r = version_result (v, "delete");
  if (v->state == DF_VSTATE_MAINTENANCE)
    {
      if (!delete_maintenance (&j, v, err))
        return false;
    }
  else
    {
      g_autoptr (GHashTable) live = live_sessions (ctx, j.farm, v->vdisk);
      guint n = live ? GPOINTER_TO_UINT (g_hash_table_lookup (
                         live, GINT_TO_POINTER (number))) : 0;
      if (n)
        {
          g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                       "version %s@%d is used by %u live session(s)",
                       v->vdisk, number, n);
          return false;
        }
      if (!live)
        g_printerr ("diskfarm: warning: no stream server of this farm could "
                    "be asked: live sessions unknown\n");
      g_autofree char *path = version_path (j.farm, v);
      if (!df_farm_version_delete (j.farm, v->vdisk, number, err))
        return false;
      df_store_crash_point ("delete-committed");
      if (g_unlink (path) != 0 && errno != ENOENT)
        {
          df_set_error_errno (err, errno, "remove %s", path);
          return false;
        }
      if (!df_fsync_dir_of (path, err))
        return false;
    }
  df_print_result (r, ctx->json, "vdisk %s: version %d deleted",
                   j.vdisk->name, number);
  return true;
}

/* ---- list ------------------------------------------------------------- */

static DfRecord *
list_record (DfFarm *farm, const DfVersion *v, GHashTable *live, GError **err)
{
  g_autoptr (GPtrArray) devs = df_farm_version_devices (farm, v->vdisk,
                                                        v->number, err);
  if (!devs)
    return NULL;
  g_ptr_array_add (devs, NULL);
  DfRecord *r = df_record_new ();
  df_record_int (r, "version", "version", v->number);
  df_record_opt_int (r, "parent", "parent", v->parent >= 0, v->parent);
  df_record_str (r, "state", "state", df_version_state_name (v->state));
  df_record_str (r, "pending_state", "pending", v->pending_state);
  df_record_str (r, "pending_at", "at", v->pending_at);
  df_record_size (r, "file_size", "size", v->file_size);
  df_record_str (r, "sha256", "sha256", v->sha256);
  df_record_strv (r, "devices", "devices", (const char *const *) devs->pdata);
  df_record_opt_int (r, "sessions", "sessions", live != NULL,
                     live ? GPOINTER_TO_INT (g_hash_table_lookup (
                              live, GINT_TO_POINTER (v->number))) : 0);
  df_record_str (r, "file", NULL, v->file);
  df_record_str (r, "created", NULL, v->created);
  return r;
}

static bool
version_list (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version list", "VDISK", 1, 1,
    "List the versions of a vDisk: state (and pending promotion), file "
    "size, SHA-256, the devices that boot each one and its live sessions "
    "(from the admin API of every stream server of this farm and --admin; "
    "'-' / null when none is reachable).",
    "  diskfarm version list win10\n  diskfarm --json version list win10\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_auto (VJob) j = { 0 };
  if (!vjob_open (ctx, argv[1], false, &j, err))
    return false;
  g_autoptr (GHashTable) live = live_sessions (ctx, j.farm, j.vdisk->name);
  g_autoptr (GPtrArray) records = df_record_list_new ();
  for (guint i = 0; i < j.versions->len; i++)
    {
      DfRecord *r = list_record (j.farm, j.versions->pdata[i], live, err);
      if (!r)
        return false;
      g_ptr_array_add (records, r);
    }
  df_print_list (records, ctx->json, "no versions");
  return true;
}

static bool
version_diff (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version diff", "VDISK A B", 3, 3,
    "List the regular files added, removed and changed from version A to "
    "version B, read-only through libguestfs (SHA-256 of every file).",
    "  diskfarm version diff win10 2 3\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_autofree char *ra = g_strdup_printf ("%s@%s", argv[1], argv[2]);
  g_autofree char *rb = g_strdup_printf ("%s@%s", argv[1], argv[3]);
  g_autoptr (DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  g_autoptr (DfVersion) a = farm ? df_inspect_resolve_ref (farm, ra, err) : NULL;
  g_autoptr (DfVersion) b = a ? df_inspect_resolve_ref (farm, rb, err) : NULL;
  return b && df_inspect_diff (ctx, farm, a, b, err);
}

/* ---- dispatch --------------------------------------------------------- */

const DfCmd df_version_cmds[] = {
  { "new", "create a maintenance version", version_new },
  { "seal", "seal the maintenance writes as a new version", version_seal },
  { "promote", "move a version to test or production", version_promote },
  { "revert", "roll production back to the previous version",
    version_revert },
  { "delete", "delete a version no one uses", version_delete },
  { "list", "versions, devices and live sessions", version_list },
  { "merge", "merge updates or build a new base", version_merge },
  { "diff", "files changed between two versions", version_diff },
  { NULL, NULL, NULL }
};
