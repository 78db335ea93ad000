/* diskfarm console: `version new|seal|promote|revert|delete|list|merge|diff`.
 *
 * CLI only: each command parses its options, opens the vDisk's versions
 * and calls one verb of lib/lifecycle (lifecycle.h: the business rules and
 * the store's crash-safety protocol), then prints the result.  The live
 * sessions a verb asks about come from the farm's stream servers
 * (df_ctx_live). */
#include "console.h"

#include <stdio.h>
#include <string.h>

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

/* Open vdisk's versions for a verb (mutate: one that changes the store). */
static DfVersions *
open_versions (DfCtx *ctx, const char *vdisk, bool mutate, DfFarm **farm,
               GError **err)
{
  *farm = df_ctx_open_farm (ctx, false, err);
  return *farm ? df_versions_open (*farm, vdisk, mutate, err) : NULL;
}

/* ---- live sessions, as the console asks them ------------------------ */

/* The farm's live sessions, asked once on first need (owned). */
typedef struct {
  const DfCtx *ctx;
  DfFarm *farm;
  bool force;          /* version new --force */
  const char *what;    /* prefix of a refusal */
  DfLive *live;
  bool asked;
} CliLive;

static void
cli_live_clear (CliLive *c)
{
  g_clear_pointer (&c->live, df_live_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (CliLive, cli_live_clear)

static bool
cli_allow_device (void *opaque, const DfDevice *d, GError **err)
{
  CliLive *c = opaque;
  if (c->live == NULL && !(c->live = df_ctx_live (c->ctx, c->farm, err)))
    return false;
  c->asked = true;
  return df_ctx_check_not_live (c->live, d, c->force, c->what, err);
}

static const DfLive *
cli_sessions (void *opaque)
{
  CliLive *c = opaque;
  if (!c->asked)
    c->live = df_ctx_live (c->ctx, c->farm, NULL);
  c->asked = true;
  if (c->live == NULL || df_live_unknown (c->live))
    {
      g_printerr ("diskfarm: warning: no stream server of this farm could "
                  "be asked: live sessions unknown\n");
      return NULL;
    }
  return c->live;
}

static DfLifecycleLive
cli_live (CliLive *c)
{
  return (DfLifecycleLive) { cli_allow_device, cli_sessions, c };
}

/* ---- results ----------------------------------------------------------- */

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

/* Print version number of vs as it is now. */
static bool
print_version (DfVersions *vs, int number, const char *action, bool json,
               const char *fmt_people, GError **err)
{
  const DfVersion *v = df_versions_find (vs, number);
  if (!v)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "vdisk '%s' has no version %d", df_versions_vdisk (vs),
                   number);
      return false;
    }
  g_autoptr (DfRecord) r = version_result (v, action);
  df_print_result (r, json, fmt_people, v->vdisk, v->number,
                   df_version_state_name (v->state));
  return true;
}

/* ---- new -------------------------------------------------------------- */

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
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfVersions) vs = open_versions (ctx, argv[1], true, &farm, err);
  if (!vs)
    return false;
  g_autofree char *what = g_strdup_printf ("vdisk %s: maintenance ",
                                           df_versions_vdisk (vs));
  g_auto (CliLive) c = { ctx, farm, force, what, NULL, false };
  DfLifecycleLive live = cli_live (&c);
  int number;
  return df_versions_new (vs, &live, &number, err)
         && print_version (vs, number, "new", ctx->json,
                           "vdisk %s: maintenance version %d created (%s)",
                           err);
}

/* ---- merge ------------------------------------------------------------ */

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
  int from = -1, to = -1;
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
  if (updates && !parse_range (updates, &from, &to, err))
    return false;
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfVersions) vs = open_versions (ctx, argv[1], true, &farm, err);
  if (!vs)
    return false;
  if (base)
    for (guint i = 0; i < df_versions_rows (vs)->len; i++)
      {
        const DfVersion *v = df_versions_rows (vs)->pdata[i];
        if (v->state != DF_VSTATE_MAINTENANCE)
          to = MAX (to, v->number);     /* the newest sealed version */
      }
  DfProgress progress;
  DfLifecycleProgress lp = df_cli_progress (&progress);
  int number;
  return df_versions_merge (vs, from, to, state, &lp, &number, err)
         && print_version (vs, number, "merge", ctx->json,
                           "vdisk %s: merged into version %d (%s)", err);
}

/* ---- seal ------------------------------------------------------------- */

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
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfVersions) vs = open_versions (ctx, argv[1], true, &farm, err);
  if (!vs)
    return false;
  DfProgress progress;
  DfLifecycleProgress lp = df_cli_progress (&progress);
  int number, merged = -1;
  if (!df_versions_seal (vs, &lp, &number, &merged, err))
    return false;
  if (merged >= 0 && !ctx->json)
    printf ("vdisk %s: chain past the auto-merge depth, merged into "
            "version %d\n", df_versions_vdisk (vs), merged);
  return print_version (vs, number, "seal", ctx->json,
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
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfVersions) vs = open_versions (ctx, argv[1], true, &farm, err);
  return vs && df_versions_promote (vs, number, target, when, err)
         && print_version (vs, number, "promote", ctx->json,
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
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfVersions) vs = open_versions (ctx, argv[1], true, &farm, err);
  int back;
  return vs && df_versions_revert (vs, &back, err)
         && print_version (vs, back, "revert", ctx->json,
                           "vdisk %s: production is version %d again (%s)",
                           err);
}

/* ---- delete ----------------------------------------------------------- */

static bool
version_delete (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "version delete", "VDISK N", 2, 2,
    "Delete version N and its file.  Refused while a device boots it, a "
    "promotion is pending on it, another version is stacked on it, or a "
    "live session uses it (asked to the farm's stream servers and --admin: "
    "$DISKFARM_ADMIN, diskfarm.conf [console] admin, default the farm's "
    "admin socket).  Deleting the maintenance version throws its "
    "writes away.",
    "  diskfarm version delete win10 2\n",
  };
  int number;
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err)
      || !parse_number ("version", argv[2], &number, err))
    return false;
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfVersions) vs = open_versions (ctx, argv[1], true, &farm, err);
  if (!vs)
    return false;
  const DfVersion *v = df_versions_find (vs, number);
  g_autoptr (DfRecord) r = v ? version_result (v, "delete") : NULL;
  g_auto (CliLive) c = { ctx, farm, false, NULL, NULL, false };
  DfLifecycleLive live = cli_live (&c);
  if (!df_versions_delete (vs, number, &live, err))
    return false;
  df_print_result (r, ctx->json, "vdisk %s: version %d deleted",
                   df_versions_vdisk (vs), number);
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
  bool pending = false;
  if (v->sha256 && !df_farm_version_replicating (farm, v->vdisk, v->number,
                                                 &pending, err))
    {
      df_record_free (r);
      return NULL;
    }
  /* PVS's rule: pending until every serving server holds it verified. */
  df_record_str (r, "store", "store", !v->sha256 ? NULL
                                      : pending ? "pending" : "ready");
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
    "size, SHA-256, store (pending until every healthy stream server of "
    "the registry holds it verified, then ready), the devices that boot "
    "each one and its live sessions "
    "(from the admin API of every stream server of this farm and --admin; "
    "'-' / null when none is reachable).",
    "  diskfarm version list win10\n  diskfarm --json version list win10\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfVersions) vs = open_versions (ctx, argv[1], false, &farm, err);
  if (!vs)
    return false;
  g_autoptr (DfLive) sessions = df_ctx_live (ctx, farm, NULL);
  g_autoptr (GHashTable) live = df_versions_live_counts (vs, sessions);
  g_autoptr (GPtrArray) records = df_record_list_new ();
  GPtrArray *rows = df_versions_rows (vs);
  for (guint i = 0; i < rows->len; i++)
    {
      DfRecord *r = list_record (farm, rows->pdata[i], live, err);
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
