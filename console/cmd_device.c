/* diskfarm console: `device add|list|show|set|remove|reset|export`.
 * Every option is validated here, before the farm is opened; the farm
 * accessors then check names, uniqueness and references in one
 * transaction, so a refused command changes nothing. */
#include "console.h"

#include <glib/gstdio.h>
#include <string.h>

static const char *const device_types[] = {
  "production", "test", "maintenance", NULL
};

/* ---- option validation ------------------------------------------------ */

static bool
parse_type (const char *s, GError **err)
{
  if (g_strv_contains (device_types, s))
    return true;
  g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
               "invalid device type '%s': expected production, test or "
               "maintenance", s);
  return false;
}

/* Cache mode in canonical spelling (new string), or NULL + err. */
static char *
parse_cache (const char *s, GError **err)
{
  DfCacheMode mode;
  if (!df_cache_mode_parse (s, &mode, err))
    return NULL;
  return df_cache_mode_to_string (&mode);
}

/* --cache help: every row of the cache-mode table (static string). */
static const char *
cache_help (void)
{
  static gsize once = 0;
  static char *text;

  if (g_once_init_enter (&once))
    {
      guint n;
      const DfCacheModeDesc *rows = df_cache_modes (&n);
      GString *s = g_string_new ("Write cache:");
      for (guint i = 0; i < n; i++)
        g_string_append_printf (s, "%s %s (%s)", i ? ";" : "",
                                rows[i].syntax, rows[i].summary);
      text = g_string_free (s, FALSE);
      g_once_init_leave (&once, 1);
    }
  return text;
}

/* Quota: a size, or "none" / "0" for no limit. */
static bool
parse_quota (const char *s, uint64_t *out, GError **err)
{
  if (g_str_equal (s, "none"))
    {
      *out = 0;
      return true;
    }
  return df_parse_size (s, out, err);
}

/* Options shared by add and set; NULL when not given.  Owned strings. */
typedef struct {
  char *mac;
  char *vdisk;
  char *cache;
  char *type;
  char *collection;
  char *quota;
} DeviceOpts;

static void device_opts_entries (DeviceOpts *o, GOptionEntry out[7]);

static void
device_opts_clear (DeviceOpts *o)
{
  GOptionEntry entries[7];
  device_opts_entries (o, entries);
  df_options_clear (entries);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (DeviceOpts, device_opts_clear)

static void
device_opts_entries (DeviceOpts *o, GOptionEntry out[7])
{
  const GOptionEntry e[7] = {
    { "mac", 'm', 0, G_OPTION_ARG_STRING, &o->mac,
      "MAC address (aa:bb:cc:dd:ee:ff, aa-bb-.., aabb.ccdd.eeff)", "MAC" },
    { "vdisk", 0, 0, G_OPTION_ARG_STRING, &o->vdisk,
      "vDisk the device boots", "VDISK" },
    { "cache", 'c', 0, G_OPTION_ARG_STRING, &o->cache, cache_help (),
      "MODE" },
    { "type", 't', 0, G_OPTION_ARG_STRING, &o->type,
      "production (default), test or maintenance", "TYPE" },
    { "collection", 0, 0, G_OPTION_ARG_STRING, &o->collection,
      "Collection the device belongs to ('' for none)", "NAME" },
    { "quota", 'q', 0, G_OPTION_ARG_STRING, &o->quota,
      "Write cache limit, qemu-img syntax: 10G, 1.5G, 4096M, at least 4K "
      "('none' or 0 for no limit)", "SIZE" },
    G_OPTION_ENTRY_NULL
  };
  memcpy (out, e, sizeof e);
}

/* Apply the given options to d (validated; d owns its strings). */
static bool
device_apply_opts (DfDevice *d, const DeviceOpts *o, GError **err)
{
  if (o->mac != NULL)
    {
      char mac[18];
      if (!df_parse_device_mac (o->mac, mac, err))
        return false;
      g_free (d->mac);
      d->mac = g_strdup (mac);
    }
  if (o->cache != NULL)
    {
      char *cache = parse_cache (o->cache, err);
      if (cache == NULL)
        return false;
      g_free (d->cache_mode);
      d->cache_mode = cache;
    }
  if (o->type != NULL)
    {
      if (!parse_type (o->type, err))
        return false;
      g_free (d->type);
      d->type = g_strdup (o->type);
    }
  if (o->quota != NULL && !parse_quota (o->quota, &d->quota, err))
    return false;
  if (o->vdisk != NULL)
    {
      g_free (d->vdisk);
      d->vdisk = g_strdup (o->vdisk);
    }
  if (o->collection != NULL)
    {
      g_free (d->collection);
      d->collection = *o->collection ? g_strdup (o->collection) : NULL;
    }
  return true;
}

/* ---- records ---------------------------------------------------------- */

DfRecord *
df_device_record (const DfDevice *d)
{
  DfRecord *r = df_record_new ();
  df_record_str (r, "name", "name", d->name);
  df_record_str (r, "mac", "mac", d->mac);
  df_record_str (r, "vdisk", "vdisk", d->vdisk);
  df_record_str (r, "type", "type", d->type);
  df_record_str (r, "cache_mode", "cache", d->cache_mode);
  df_record_limit (r, "quota", "quota", d->quota);
  df_record_str (r, "collection", "collection", d->collection);
  df_record_int (r, "generation", "generation", d->generation);
  df_record_bool (r, "nbd_tls_key", "nbd tls key", d->has_nbd_psk);
  df_record_str (r, "created", NULL, d->created);
  return r;
}

/* ---- add -------------------------------------------------------------- */

/* Without --vdisk, a device takes its collection's default vDisk. */
static bool
default_vdisk (DfFarm *farm, DfDevice *d, GError **err)
{
  if (d->vdisk != NULL)
    return true;
  if (d->collection == NULL)
    {
      df_usage_error (err, "device add: missing --vdisk");
      return false;
    }
  g_autoptr(DfCollection) c = df_farm_collection_get (farm, d->collection,
                                                      err);
  if (c == NULL)
    return false;
  if (c->vdisk == NULL)
    {
      df_usage_error (err, "device add: missing --vdisk (collection '%s' "
                      "has no default vdisk)", c->name);
      return false;
    }
  d->vdisk = g_strdup (c->vdisk);
  return true;
}

/* The device target's access rule as streamsvc applies it (the farm's
 * iscsi-chap policy over the device's own settings). */
static bool
add_iscsi_access (DfFarm *farm, DfRecord *r, const char *device,
                  GError **err)
{
  g_autoptr(DfChap) chap = df_farm_chap_get (farm, device, err);
  if (chap == NULL)
    return false;
  df_record_bool (r, "iscsi_chap_required", "iSCSI CHAP required",
                  chap->chap_required);
  df_record_str (r, "iscsi_initiator", "iSCSI initiator accepted",
                 chap->initiator ? chap->initiator : DF_INITIATOR_ANY);
  return true;
}

/* ---- cache lease (which server may write the cache) -------------------- */

/* What a lease row means now: held, lapsed, released, or local (to its
 * holder's disk, for the generation it names). */
static const char *
lease_state (const DfCacheLease *l, const DfDevice *d)
{
  if (l->kind == DF_LEASE_LOCAL)
    return l->generation == d->generation
                   || l->generation == DF_LEASE_EVERY_GENERATION
               ? "local" : "stale";
  if (l->expires_ms == 0)
    return "released";
  return df_farm_now_ms () > l->expires_ms ? "lapsed" : "held";
}

static char *
lease_json (const DfCacheLease *l, const char *state)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "kind");
  json_builder_add_string_value (b, l->kind == DF_LEASE_LOCAL ? "local"
                                                               : "shared");
  json_builder_set_member_name (b, "state");
  json_builder_add_string_value (b, state);
  json_builder_set_member_name (b, "holder");
  json_builder_add_string_value (b, l->holder);
  json_builder_set_member_name (b, "epoch");
  json_builder_add_int_value (b, l->epoch);
  json_builder_set_member_name (b, "generation");
  json_builder_add_int_value (b, l->generation);
  json_builder_set_member_name (b, "expires_ms");
  json_builder_add_int_value (b, l->expires_ms);
  json_builder_set_member_name (b, "acquired_ms");
  json_builder_add_int_value (b, l->acquired_ms);
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  return json_to_string (root, FALSE);
}

static char *
lease_text (const DfCacheLease *l, const char *state)
{
  if (l->kind == DF_LEASE_LOCAL && l->generation == DF_LEASE_EVERY_GENERATION)
    return g_strdup_printf ("%s: on %s's own disk for every boot generation",
                            state, l->holder);
  if (l->kind == DF_LEASE_LOCAL)
    return g_strdup_printf ("%s: on %s's own disk for generation %" G_GINT64_FORMAT
                            "%s", state, l->holder, l->generation,
                            strcmp (state, "stale") == 0
                                ? " (the device has booted again since)"
                                : "");
  if (strcmp (state, "held") == 0)
    return g_strdup_printf ("held by %s, epoch %" G_GINT64_FORMAT
                            ", %" G_GINT64_FORMAT " s left",
                            l->holder, l->epoch,
                            (l->expires_ms - df_farm_now_ms () + 999) / 1000);
  return g_strdup_printf ("%s by %s, epoch %" G_GINT64_FORMAT, state,
                          l->holder, l->epoch);
}

/* The device's cache lease (streamsvc's, DESIGN.md "A farm of many
 * servers"): null when no server ever claimed its cache. */
static bool
add_cache_lease (DfFarm *farm, DfRecord *r, const DfDevice *d, bool json,
                 GError **err)
{
  GError *local = NULL;
  g_autoptr (DfCacheLease) l = df_farm_lease_get (farm, d->name, &local);
  if (local != NULL)
    {
      g_propagate_error (err, local);
      return false;
    }
  if (l == NULL)
    {
      df_record_str (r, "cache_lease", "cache lease", NULL);
      return true;
    }
  const char *state = lease_state (l, d);
  g_autofree char *text = json ? lease_json (l, state) : lease_text (l, state);
  if (json)
    df_record_object (r, "cache_lease", "cache lease", text);
  else
    df_record_str (r, "cache_lease", "cache lease", text);
  return true;
}

/* ---- NBD pre-shared key (--nbd-psk generate|none) ---------------------- */

typedef enum { NBD_PSK_KEEP, NBD_PSK_GENERATE, NBD_PSK_NONE } NbdPskOp;

static bool
parse_nbd_psk (const char *cmd, const char *s, NbdPskOp *op, GError **err)
{
  *op = NBD_PSK_KEEP;
  if (s == NULL)
    return true;
  if (g_str_equal (s, "generate"))
    *op = NBD_PSK_GENERATE;
  else if (g_str_equal (s, "none"))
    *op = NBD_PSK_NONE;
  else
    {
      df_usage_error (err, "%s: --nbd-psk takes generate or none, not '%s'",
                      cmd, s);
      return false;
    }
  return true;
}

/* Apply op to device; *line receives the client's PSK file line
 * "NAME:hexkey" when a key was made (df_secret_free), else NULL. */
static bool
apply_nbd_psk (DfFarm *farm, const char *device, NbdPskOp op, char **line,
               GError **err)
{
  g_autoptr (DfSecret) hex = NULL;

  *line = NULL;
  if (op == NBD_PSK_NONE)
    return df_farm_nbd_psk_clear (farm, device, err);
  if (op != NBD_PSK_GENERATE)
    return true;
  if (!df_farm_nbd_psk_generate (farm, device, &hex, err))
    return false;
  *line = g_strdup_printf ("%s:%s", device, hex);
  return true;
}

#define NBD_PSK_HELP                                                         \
  "NBD TLS pre-shared key: generate makes a random 32-byte key (the TLS "   \
  "PSK identity is the device name) and prints the client's PSK file "      \
  "line NAME:hexkey once; none removes it"

/* Print a device as stored (re-read, so defaults and canonical forms show),
 * and psk_line (nullable: the one time it is shown) after it. */
static bool
print_device (DfFarm *farm, const char *name, bool json, const char *verb,
              const char *psk_line, GError **err)
{
  g_autoptr(DfDevice) d = df_farm_device_get (farm, name, err);
  if (d == NULL)
    return false;
  g_autoptr(DfRecord) r = df_device_record (d);
  if (psk_line != NULL)
    df_record_str (r, "nbd_psk", NULL, psk_line);
  if (!add_iscsi_access (farm, r, d->name, err))
    return false;
  df_print_result (r, json, "%s device '%s' (%s): vdisk '%s', %s, %s cache",
                   verb, d->name, d->mac, d->vdisk, d->type, d->cache_mode);
  if (psk_line != NULL && !json)
    {
      printf ("%s\n", psk_line);
      fflush (stdout);
      fprintf (stderr, "diskfarm: the line above is the NBD TLS PSK of '%s' "
               "(a tls-psk-file line for qemu, nbdkit, libnbd); it is not "
               "shown again\n", d->name);
    }
  return true;
}

static bool
device_add (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "device add", "NAME", 1, 1,
    "Register a device (a target that boots from a vDisk) with its MAC "
    "address, vDisk, write cache mode, type, collection and cache quota.  "
    "--vdisk may be left out when the collection has a default vDisk.  "
    "--nbd-psk generate gives it an NBD TLS key and prints the client's "
    "line NAME:hexkey once.",
    "  diskfarm device add pc01 --mac 52:54:00:12:34:56 --vdisk win10 "
    "--cache ram:512 --quota 20G --collection lab\n"
    "  diskfarm device add pc02 --mac 52:54:00:12:34:57 --vdisk win10 "
    "--nbd-psk generate >pc02.psk\n",
  };
  g_auto(DeviceOpts) o = { 0 };
  g_autofree char *nbd_psk = NULL;
  g_autoptr (DfSecret) psk_line = NULL;
  NbdPskOp psk_op;
  GOptionEntry entries[8];
  device_opts_entries (&o, entries);
  entries[6] = (GOptionEntry) { "nbd-psk", 0, 0, G_OPTION_ARG_STRING,
                                &nbd_psk, NBD_PSK_HELP, "generate|none" };
  entries[7] = (GOptionEntry) G_OPTION_ENTRY_NULL;
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err)
      || !parse_nbd_psk ("device add", nbd_psk, &psk_op, err))
    return false;
  if (o.mac == NULL)
    {
      df_usage_error (err, "device add: missing --mac");
      return false;
    }
  g_autoptr(DfDevice) d = g_new0 (DfDevice, 1);
  d->name = g_strdup (argv[1]);
  d->type = g_strdup ("production");
  d->cache_mode = g_strdup (df_cache_mode_default ());
  if (!df_validate_name ("device", d->name, err)
      || !device_apply_opts (d, &o, err))
    return false;
  g_autoptr(DfFarm) farm = df_ctx_open_farm (ctx, false, err);
  if (farm == NULL || !default_vdisk (farm, d, err)
      || !df_farm_begin (farm, err))
    return false;
  /* the device and its key, or neither */
  if (!df_farm_device_add (farm, d, err)
      || !apply_nbd_psk (farm, d->name, psk_op, &psk_line, err))
    {
      df_farm_rollback (farm);
      return false;
    }
  return df_farm_commit (farm, err)
    && print_device (farm, d->name, ctx->json, "added", psk_line, err);
}

/* ---- list / show ------------------------------------------------------ */

static bool
device_list (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "device list", "", 0, 0,
    "List the devices, or those of one collection.",
    "  diskfarm device list --collection lab\n",
  };
  g_autofree char *collection = NULL;
  const GOptionEntry entries[] = {
    { "collection", 0, 0, G_OPTION_ARG_STRING, &collection,
      "Only devices of this collection", "NAME" },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (DfFarm) farm = df_cmd_open_farm (ctx, &spec, entries, &argc, &argv,
                                              err);
  if (farm == NULL)
    return false;
  if (collection != NULL)
    {
      g_autoptr(DfCollection) c = df_farm_collection_get (farm, collection,
                                                          err);
      if (c == NULL)
        return false;
    }
  g_autoptr(GPtrArray) devices = df_farm_device_list (farm, collection, err);
  if (devices == NULL)
    return false;
  g_autoptr(GPtrArray) records = df_record_list_new ();
  for (guint i = 0; i < devices->len; i++)
    g_ptr_array_add (records, df_device_record (devices->pdata[i]));
  df_print_list (records, ctx->json, "no devices");
  return true;
}

/* Open the farm into *farm (the caller's, to free) and look up the device
 * named by name (its name or MAC): a new reference, or NULL with err set. */
static DfDevice *
open_device (DfCtx *ctx, DfFarm **farm, const char *name, GError **err)
{
  *farm = df_ctx_open_farm (ctx, false, err);
  return *farm != NULL ? df_farm_device_get (*farm, name, err) : NULL;
}

static bool
device_show (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "device show", "NAME|MAC", 1, 1,
    "Show one device, found by name or MAC address: its settings, boot "
    "generation, cache directory, the vDisk version its type boots, and "
    "whether it is live: on which stream server(s) of the farm, and the "
    "version, generation and cache each session is bound to (servers "
    "that cannot be asked are warnings on stderr).  Its cache lease: "
    "which server may write its cache (shared: held, lapsed or released, "
    "with the holder and epoch; local: on that server's own disk for one "
    "boot generation, or for every one for a server-persistent cache "
    "without a shared directory or a private image), or none.",
    "  diskfarm device show pc01\n  diskfarm device show 52:54:00:12:34:56\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfDevice) d = open_device (ctx, &farm, argv[1], err);
  if (d == NULL)
    return false;
  g_autoptr(DfVersion) boots = df_farm_version_for_type (farm, d->vdisk,
                                                         d->type, NULL);
  g_autofree char *cache_dir = df_farm_cache_dir (farm, d->name);
  g_autoptr(DfLive) live = df_ctx_live (ctx, farm, err);
  if (live == NULL)
    return false;
  g_autoptr(GPtrArray) mine = df_live_device_sessions (live, d);
  DfRecord *r = df_device_record (d);
  if (!add_iscsi_access (farm, r, d->name, err)
      || !add_cache_lease (farm, r, d, ctx->json, err))
    {
      df_record_free (r);
      return false;
    }
  df_record_opt_int (r, "boot_version", "boot version", boots != NULL,
                     boots ? boots->number : 0);
  df_record_str (r, "cache_dir", "cache dir", cache_dir);
  df_record_bool (r, "live", "live", mine->len > 0);
  GPtrArray *sessions = df_record_list_new ();
  for (guint i = 0; i < mine->len; i++)
    g_ptr_array_add (sessions, df_live_session_record (mine->pdata[i]));
  g_autoptr(DfReport) rep = df_report_new (r);
  df_report_add_list (rep, "sessions", "live sessions", sessions);
  df_report_print (rep, ctx->json);
  return true;
}

/* ---- set -------------------------------------------------------------- */

/* iSCSI CHAP options of `device set` (secrets come from files so they
 * never show in ps or shell history, and are never printed). */
typedef struct {
  char *user;
  char *secret_file;
  char *mutual_file;
  gboolean none;
} ChapOpts;

static void
chap_opts_clear (ChapOpts *o)
{
  g_free (o->user);
  g_free (o->secret_file);
  g_free (o->mutual_file);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (ChapOpts, chap_opts_clear)

static bool
chap_opts_given (const ChapOpts *o)
{
  return o->user || o->secret_file || o->mutual_file || o->none;
}

/* The secret in path: the whole file minus one final newline.  New
 * string (the caller frees it with df_secret_free) or NULL + err. */
static char *
read_secret_file (const char *what, const char *path, GError **err)
{
  g_autoptr (DfSecret) buf = NULL;
  gsize len;

  if (!g_file_get_contents (path, &buf, &len, err))
    return NULL;
  if (len > 0 && buf[len - 1] == '\n')
    buf[--len] = '\0';
  if (len > 0 && buf[len - 1] == '\r')
    buf[--len] = '\0';
  if (!df_chap_validate_secret (what, buf, len, err))
    {
      df_secret_wipe (buf, len);   /* it may hold a NUL */
      g_prefix_error (err, "%s: ", path);
      return NULL;
    }
  return g_steal_pointer (&buf);
}

static bool
device_set_chap (DfFarm *farm, const char *device, const ChapOpts *o,
                 GError **err)
{
  g_autoptr (DfSecret) secret = NULL;
  g_autoptr (DfSecret) mutual = NULL;

  if (o->none)
    {
      if (o->user || o->secret_file || o->mutual_file)
        {
          df_usage_error (err, "device set: --no-chap excludes the other "
                          "CHAP options");
          return false;
        }
      return df_farm_chap_set (farm, device, NULL, NULL, NULL, err);
    }
  if (o->user == NULL || o->secret_file == NULL)
    {
      df_usage_error (err, "device set: CHAP needs --chap-user and "
                      "--chap-secret-file");
      return false;
    }
  secret = read_secret_file ("CHAP secret", o->secret_file, err);
  if (secret == NULL)
    return false;
  if (o->mutual_file != NULL)
    {
      mutual = read_secret_file ("mutual CHAP secret", o->mutual_file, err);
      if (mutual == NULL)
        return false;
    }
  return df_farm_chap_set (farm, device, o->user, secret, mutual, err);
}

static bool
update_fn (DfFarm *farm, gpointer d, GError **err)
{
  return df_farm_device_update (farm, d, err);
}

static bool
remove_fn (DfFarm *farm, gpointer d, GError **err)
{
  return df_farm_device_remove (farm, ((DfDevice *) d)->name, err);
}

/* Whether a change from was to d swaps the disk under a running device:
 * another vDisk, type (so version) or cache mode. */
static bool
disk_changes (const DfDevice *was, const DfDevice *d)
{
  return g_strcmp0 (was->vdisk, d->vdisk) != 0
         || g_strcmp0 (was->type, d->type) != 0
         || g_strcmp0 (was->cache_mode, d->cache_mode) != 0;
}

static bool
device_set (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "device set", "NAME|MAC", 1, 1,
    "Change the settings of a device.  Options not given keep their value; "
    "a new vDisk or cache mode applies from the device's next boot.  "
    "iSCSI CHAP: secrets are read from files (12-255 bytes, one final "
    "newline ignored); the mutual (target) secret must differ from the "
    "initiator's.  A change of --vdisk, --type or --cache is refused while "
    "the device is live on a stream server of the farm, unless --force "
    "(its server then fences the session); when no server can be asked, it "
    "goes ahead with a warning.  A vDisk has at most one maintenance "
    "device.  --nbd-psk generate replaces the device's NBD TLS key (the "
    "old one stops working at the next TLS handshake) and prints the "
    "client's line NAME:hexkey once; --nbd-psk none removes it.",
    "  diskfarm device set pc01 --vdisk win11 --type test\n"
    "  diskfarm device set pc01 --quota none --collection ''\n"
    "  diskfarm device set pc01 --chap-user pc01 --chap-secret-file s.txt\n"
    "  diskfarm device set pc01 --no-chap\n"
    "  diskfarm device set pc01 --nbd-psk generate >pc01.psk\n"
    "  diskfarm device set pc01 --iscsi-initiator iqn.1991-05.com.microsoft:pc01\n",
  };
  g_auto(DeviceOpts) o = { 0 };
  g_auto(ChapOpts) co = { 0 };
  g_autofree char *initiator = NULL;
  gboolean force = FALSE;
  g_autofree char *nbd_psk = NULL;
  g_autoptr (DfSecret) psk_line = NULL;
  NbdPskOp psk_op;
  GOptionEntry entries[14];
  device_opts_entries (&o, entries);
  const GOptionEntry chap[8] = {
    { "force", 0, 0, G_OPTION_ARG_NONE, &force,
      "Change --vdisk, --type or --cache even while the device is live",
      NULL },
    { "chap-user", 0, 0, G_OPTION_ARG_STRING, &co.user,
      "iSCSI CHAP user name of the device", "USER" },
    { "chap-secret-file", 0, 0, G_OPTION_ARG_FILENAME, &co.secret_file,
      "File holding the CHAP secret (initiator -> target)", "FILE" },
    { "mutual-secret-file", 0, 0, G_OPTION_ARG_FILENAME, &co.mutual_file,
      "File holding the mutual CHAP secret (target -> initiator)", "FILE" },
    { "no-chap", 0, 0, G_OPTION_ARG_NONE, &co.none,
      "Remove the device's CHAP credentials", NULL },
    { "nbd-psk", 0, 0, G_OPTION_ARG_STRING, &nbd_psk, NBD_PSK_HELP,
      "generate|none" },
    { "iscsi-initiator", 0, 0, G_OPTION_ARG_STRING, &initiator,
      "The one iSCSI InitiatorName its target accepts: an iSCSI name, "
      "'any', or 'default' (its boot script's name when the farm's "
      "iscsi-chap is required, else any)", "IQN|any|default" },
    G_OPTION_ENTRY_NULL
  };
  memcpy (entries + 6, chap, sizeof chap);
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err)
      || !parse_nbd_psk ("device set", nbd_psk, &psk_op, err))
    return false;
  if (!o.mac && !o.vdisk && !o.cache && !o.type && !o.collection && !o.quota
      && !chap_opts_given (&co) && psk_op == NBD_PSK_KEEP && !initiator)
    {
      df_usage_error (err, "device set: nothing to change");
      return false;
    }
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfDevice) d = open_device (ctx, &farm, argv[1], err);
  if (d == NULL)
    return false;
  g_autoptr(DfDevice) was = df_farm_device_get (farm, d->name, err);
  if (was == NULL)
    return false;
  if ((o.mac || o.vdisk || o.cache || o.type || o.collection || o.quota)
      && (!device_apply_opts (d, &o, err)
          || !(disk_changes (was, d)
               ? df_ctx_change_unless_live (ctx, farm, was, force, update_fn,
                                            d, err)
               : df_farm_device_update (farm, d, err))))
    return false;
  if (chap_opts_given (&co) && !device_set_chap (farm, d->name, &co, err))
    return false;
  if (initiator
      && !df_farm_device_initiator_set (
          farm, d->name, g_str_equal (initiator, "default") ? NULL : initiator,
          err))
    return false;
  if (!apply_nbd_psk (farm, d->name, psk_op, &psk_line, err))
    return false;
  return print_device (farm, d->name, ctx->json, "updated", psk_line, err);
}

/* ---- remove / reset --------------------------------------------------- */

static bool
device_remove (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "device remove", "NAME|MAC", 1, 1,
    "Remove a device and delete its write cache files.  Refused while the "
    "device is live on a stream server of the farm, unless --force (its "
    "server then fences the session); when no server can be asked, goes "
    "ahead with a warning.",
    "  diskfarm device remove pc01\n  diskfarm device remove pc01 --force\n",
  };
  gboolean force = FALSE;
  const GOptionEntry entries[] = {
    { "force", 0, 0, G_OPTION_ARG_NONE, &force,
      "Remove the device even while it is live", NULL },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfDevice) d = open_device (ctx, &farm, argv[1], err);
  if (d == NULL
      || !df_ctx_change_unless_live (ctx, farm, d, force, remove_fn, d, err))
    return false;
  g_autofree char *dir = df_farm_cache_dir (farm, d->name);
  if (!df_cache_discard_dir (dir, err))
    {
      g_prefix_error (err, "device '%s' removed, but its cache was not "
                      "deleted: ", d->name);
      return false;
    }
  g_rmdir (dir);
  g_autoptr(DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", d->name);
  df_record_str (r, "mac", "mac", d->mac);
  df_print_result (r, ctx->json, "removed device '%s' (%s)", d->name,
                   d->mac);
  return true;
}

/* "; its live session(s) of the old generation are fenced: server s1
 * (...), ..." or "" (new string). */
static char *
fenced_text (GPtrArray *sessions)
{
  if (sessions->len == 0)
    return g_strdup ("");
  GString *gs = g_string_new ("; its live session(s) of the old generation "
                              "are fenced: ");
  for (guint i = 0; i < sessions->len; i++)
    {
      g_autofree char *where = df_live_session_describe (sessions->pdata[i]);
      g_string_append_printf (gs, "%s%s", i ? ", " : "", where);
    }
  return g_string_free (gs, FALSE);
}

/* What the reset does to d's writes, in words, from its mode's row:
 * new string.  deleted: the row whose data --discard removed (the
 * device's own, or one left from an earlier mode), or NULL.  pinned:
 * the version a private image stays on (nullable). */
static char *
reset_effect (const DfDevice *d, const DfCacheMode *mode, bool discard,
              const DfCacheModeDesc *deleted, const DfVersion *pinned,
              const DfVersion *maint)
{
  const DfCacheModeDesc *desc = df_cache_mode_desc (mode);
  GString *gs = g_string_new (NULL);

  if (desc->survives_reset && deleted == desc)
    g_string_append_printf (gs, "its %s was deleted: it boots the vDisk as "
                            "published", desc->label);
  else if (desc->survives_reset)
    g_string_append_printf (gs, "its %s is kept (--discard deletes it)",
                            desc->label);
  else if (desc->open_store == NULL)
    g_string_append_printf (gs, "cache mode %s keeps nothing on the server: "
                            "recreate the VM's qcow2 overlay before it boots "
                            "again (the libvirt hook does it on prepare)",
                            desc->name);
  else
    g_string_append_printf (gs, "its %s cache starts empty at its next boot",
                            d->cache_mode);
  if (discard && deleted != NULL && deleted != desc)
    g_string_append_printf (gs, "; a %s left from an earlier mode was "
                            "deleted", deleted->label);
  else if (discard && deleted == NULL && !desc->survives_reset)
    g_string_append (gs, desc->open_store != NULL
                     ? "; --discard had nothing more to delete"
                     : "; --discard had nothing to delete");
  if (desc->pins_base && deleted != desc && pinned != NULL)
    g_string_append_printf (gs, "; a private image is never reset: it stays "
                            "on %s v%d", pinned->vdisk, pinned->number);
  if (maint)
    g_string_append_printf (gs, "; the writes to maintenance version %d are "
                            "kept until 'diskfarm version seal %s' or "
                            "'version delete %s %d'", maint->number,
                            maint->vdisk, maint->vdisk, maint->number);
  return g_string_free (gs, FALSE);
}

/* The unsealed maintenance version a maintenance device writes to, or
 * NULL (new reference). */
static DfVersion *
maintenance_target (DfFarm *farm, const DfDevice *d)
{
  if (!g_str_equal (d->type, "maintenance"))
    return NULL;
  DfVersion *v = df_farm_version_for_type (farm, d->vdisk, d->type, NULL);
  if (v && v->state != DF_VSTATE_MAINTENANCE)
    g_clear_pointer (&v, df_version_free);
  return v;
}

static bool
device_reset (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "device reset", "NAME|MAC", 1, 1,
    "Start a new boot generation for a device, and say what happens to its "
    "writes: a server or ram cache starts empty at its next boot; a "
    "server-persistent cache is kept, or deleted with --discard; a private "
    "image is never reset (it stays on the version it was made over), "
    "--discard deletes it (save it first with device export) and the next "
    "boot makes a new one over the version the device's type selects "
    "then; a device "
    "in cache mode hypervisor has nothing on the server and gets the "
    "version its type selects now, read-only, so its qcow2 overlay must be "
    "recreated before it boots again (the libvirt hook does that on "
    "prepare); a maintenance device's writes to an unsealed maintenance "
    "version are kept for 'version seal'.  Prints the new generation.  "
    "Allowed while the device is live: its servers fence the sessions bound "
    "to the old generation (the device must reconnect), and the message "
    "says which.",
    "  diskfarm device reset pc01\n  diskfarm device reset pc01 --discard\n",
  };
  gboolean discard = FALSE;
  const GOptionEntry entries[] = {
    { "discard", 0, 0, G_OPTION_ARG_NONE, &discard,
      "Also delete a server-persistent cache or a private image", NULL },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfDevice) d = open_device (ctx, &farm, argv[1], err);
  DfCacheMode mode;
  if (d == NULL || !df_cache_mode_parse (d->cache_mode, &mode, err))
    return false;
  g_autoptr(DfLive) live = df_ctx_live (ctx, farm, err);
  if (live == NULL)
    return false;
  g_autoptr(GPtrArray) mine = df_live_device_sessions (live, d);
  gint64 generation = 0;
  if (!df_farm_device_new_generation (farm, d->name, &generation, err))
    return false;
  g_autofree char *dir = df_farm_cache_dir (farm, d->name);
  g_autoptr(DfVersion) pinned = NULL;
  bool other_vdisk = false;
  df_farm_device_pin (farm, d, &pinned, &other_vdisk, NULL);
  const DfCacheModeDesc *deleted = discard ? df_cache_dir_holds (dir) : NULL;
  if (discard && !df_cache_discard_dir (dir, err))
    {
      g_prefix_error (err, "device '%s': new boot generation %"
                      G_GINT64_FORMAT ", but the cache was not deleted: ",
                      d->name, generation);
      return false;
    }
  g_autoptr (DfVersion) maint = maintenance_target (farm, d);
  g_autofree char *effect = reset_effect (d, &mode, discard, deleted, pinned,
                                         maint);
  g_autoptr(DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", d->name);
  df_record_int (r, "generation", "generation", generation);
  df_record_str (r, "cache_mode", "cache mode", d->cache_mode);
  df_record_bool (r, "discarded", "discarded", deleted != NULL);
  df_record_str (r, "effect", "effect", effect);
  df_record_int (r, "fenced_session_count", "fenced sessions", mine->len);
  g_autofree char *fenced = fenced_text (mine);
  df_print_result (r, ctx->json, "device '%s': boot generation %"
                   G_GINT64_FORMAT "; %s%s", d->name, generation, effect,
                   fenced);
  return true;
}

/* ---- export ----------------------------------------------------------- */

/* --format, or from FILE's extension (.raw/.img, .qcow2). */
static bool
export_format (const char *format, const char *file, DfImageFormat *fmt,
               GError **err)
{
  if (format == NULL && (g_str_has_suffix (file, ".raw")
                         || g_str_has_suffix (file, ".img")))
    format = "raw";
  else if (format == NULL && g_str_has_suffix (file, ".qcow2"))
    format = "qcow2";
  if (format == NULL)
    {
      df_usage_error (err, "device export: missing --format raw|qcow2 (FILE "
                      "does not end in .raw, .img or .qcow2)");
      return false;
    }
  if (!df_image_format_parse (format, fmt, err))
    return false;
  if (*fmt == DF_FMT_UNKNOWN)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "export format must be raw or qcow2, not '%s'", format);
      return false;
    }
  return true;
}

/* The chain of the version d's private image is over (new ref). */
static df_blk *
private_base (DfFarm *farm, const DfDevice *d, GError **err)
{
  g_autoptr(DfVersion) v = NULL;
  bool other = false;

  if (!df_farm_device_pin (farm, d, &v, &other, err))
    return NULL;
  if (v == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "device '%s' has no private image (cache mode %s)",
                   d->name, d->cache_mode);
      return NULL;
    }
  g_autofree char *path = df_farm_version_path (farm, v->vdisk, v->number);
  return df_chain_open (path, DF_FMT_QCOW2, err);
}

/* Refuse while d has a live session (the first one named).  The image's
 * flock (df_cache_private_export) is the backstop: it also covers a
 * server that cannot be asked, and one that holds the image without a
 * session. */
static bool
export_not_live (const DfCtx *ctx, DfFarm *farm, const DfDevice *d,
                 GError **err)
{
  g_autoptr(DfLive) live = df_ctx_live_quiet (ctx, farm, err);
  if (live == NULL)
    return false;
  g_autoptr(GPtrArray) mine = df_live_device_sessions (live, d);
  if (mine->len == 0)
    return true;
  g_autofree char *where = df_live_session_describe (mine->pdata[0]);
  g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
               "device '%s' is live on %s: stop it first", d->name, where);
  return false;
}

static bool
device_export (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "device export", "NAME|MAC FILE", 2, 2,
    "Write a device's private image (cache mode private) as one standalone "
    "raw or qcow2 file: the version it was made over with the device's "
    "writes flattened in.  Refused while the device is live, and while a "
    "stream service still holds the image (it does until it stops or the "
    "device's next connection after a new boot generation).  An existing "
    "FILE is never overwritten.",
    "  diskfarm device export pc01 pc01.qcow2\n"
    "  diskfarm device export pc01 pc01.disk --format raw\n",
  };
  g_autofree char *format = NULL;
  const GOptionEntry entries[] = {
    { "format", 'f', 0, G_OPTION_ARG_STRING, &format,
      "Output format: raw or qcow2 (default: from FILE's extension)", "FMT" },
    G_OPTION_ENTRY_NULL
  };
  if (!df_cmd_parse (ctx, &spec, entries, &argc, &argv, err))
    return false;
  const char *out = argv[2];
  DfImageFormat fmt = DF_FMT_UNKNOWN;
  if (!export_format (format, out, &fmt, err)
      || !df_cmd_export_target (out, err))
    return false;
  g_autoptr (DfFarm) farm = NULL;
  g_autoptr (DfDevice) d = open_device (ctx, &farm, argv[1], err);
  if (d == NULL)
    return false;
  g_autofree char *dir = df_farm_cache_dir (farm, d->name);
  g_autoptr(df_blk) base = private_base (farm, d, err);
  if (base == NULL || !export_not_live (ctx, farm, d, err))
    return false;

  DfProgress progress;
  df_progress_init (&progress, "exporting");
  df_interrupt_begin ();   /* Ctrl-C: no temp file is left next to FILE */
  bool ok = df_cache_private_export (base, dir, out, fmt, df_progress_update,
                                     &progress, err);
  df_interrupt_end ();
  df_progress_end (&progress);
  if (!ok)
    {
      if (g_error_matches (*err, DF_ERROR, DF_ERROR_BUSY))
        g_prefix_error (err, "device '%s' is live (a stream service holds "
                        "its image; stop it first): ", d->name);
      return false;
    }
  g_autoptr(DfRecord) r = df_record_new ();
  df_record_str (r, "name", "name", d->name);
  df_record_export (r, out, fmt, base->size);
  g_autofree char *vs = df_format_size (base->size);
  df_print_result (r, ctx->json, "exported the private image of device '%s' "
                   "to %s (%s, %s)", d->name, out, df_image_format_name (fmt),
                   vs);
  return true;
}

const DfCmd df_device_cmds[] = {
  { "add", "register a device", device_add },
  { "list", "list devices", device_list },
  { "show", "show one device by name or MAC", device_show },
  { "set", "change a device's settings", device_set },
  { "remove", "remove a device and its cache", device_remove },
  { "reset", "start a new boot generation", device_reset },
  { "export", "write a private image out as raw or qcow2", device_export },
  { NULL, NULL, NULL }
};
