/* diskfarm: the cache-mode table - the one home of every fact about a
 * write-cache mode: its spelling and argument, how it opens, whether it
 * is durable, survives `device reset`, pins its version, and which files
 * it keeps in the device's cache directory.  Every program asks this
 * table (df_cache_mode_parse, df_cache_mode_desc); nothing else switches
 * on DfCacheKind.  A new mode is one store file + one row here. */
#include "cache_int.h"

#include <string.h>

/* ram:<size> bounds: 1 TiB of RAM cache per device is already absurd. */
#define RAM_MIN ((uint64_t) 1 << 20)
#define RAM_MAX ((uint64_t) 1 << 40)

/* ---- ram:<size> --------------------------------------------------------- */

/* "512" (MiB, the historical spelling) or a df_parse_size size. */
static bool
ram_parse_arg (const char *s, const char *whole, DfCacheMode *m,
               GError **err)
{
  g_autoptr (GError) e = NULL;
  uint64_t v;
  bool mib = df_all_digits (s, strlen (s));

  if (!df_parse_size (s, &v, &e))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "cache mode \"%s\": %s (ram:<MiB> as in ram:512, or a "
                   "size as in ram:1.5G)", whole, e->message);
      return false;
    }
  if (mib)
    v = v > (RAM_MAX >> 20) ? RAM_MAX + 1 : v << 20;
  if (v > RAM_MAX)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "cache mode \"%s\": ram size above the maximum of 1T "
                   "(%" G_GUINT64_FORMAT " MiB)", whole, RAM_MAX >> 20);
      return false;
    }
  if (v < RAM_MIN)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "cache mode \"%s\": ram size must be at least 1 MiB",
                   whole);
      return false;
    }
  m->ram_limit = v;
  return true;
}

/* Whole MiB as before; else the exact size.  New string. */
static char *
ram_format_arg (const DfCacheMode *m)
{
  if ((m->ram_limit & ((1u << 20) - 1)) == 0)
    return g_strdup_printf ("%" G_GUINT64_FORMAT, m->ram_limit >> 20);
  if ((m->ram_limit & ((1u << 10) - 1)) == 0)
    return g_strdup_printf ("%" G_GUINT64_FORMAT "K", m->ram_limit >> 10);
  return g_strdup_printf ("%" G_GUINT64_FORMAT "B", m->ram_limit);
}

/* ---- the table ------------------------------------------------------------ */

#define DURABLE_FILES(p) \
  p DF_CACHE_DATA_SUFFIX, p DF_CACHE_MAP_SUFFIX, \
  p DF_CACHE_MAP_SUFFIX DF_CACHE_TMP_SUFFIX

static const char *const persistent_files[] = {
  DURABLE_FILES (DF_CACHE_PERSISTENT_PREFIX), NULL,
};
static const char *const private_files[] = {
  DURABLE_FILES (DF_CACHE_PRIVATE_PREFIX), DF_CACHE_PIN_FILE,
  DF_CACHE_PIN_FILE DF_CACHE_TMP_SUFFIX, NULL,
};

static const DfCacheModeDesc modes[DF_CACHE_N_KINDS] = {
  [DF_CACHE_SERVER] = {
    .kind = DF_CACHE_SERVER, .name = "server", .syntax = "server",
    .summary = "server disk, sparse; reset at the next boot (default)",
    .open_store = df_cache_server_open,
  },
  [DF_CACHE_RAM] = {
    .kind = DF_CACHE_RAM, .name = "ram", .syntax = "ram:<size>",
    .summary = "server RAM up to <size> (ram:512 is 512 MiB, ram:1.5G), "
               "overflow to server disk; reset at the next boot",
    .parse_arg = ram_parse_arg, .format_arg = ram_format_arg,
    .open_store = df_cache_ram_open,
  },
  [DF_CACHE_PERSISTENT] = {
    .kind = DF_CACHE_PERSISTENT, .name = "server-persistent",
    .syntax = "server-persistent",
    .summary = "server disk, durable on FLUSH/FUA; survives reboots "
               "(device reset --discard deletes it)",
    .open_store = df_cache_persistent_open, .files = persistent_files,
    .label = "server-persistent cache", .persistent = true, .survives_reset = true,
  },
  [DF_CACHE_HYPERVISOR] = {
    .kind = DF_CACHE_HYPERVISOR, .name = "hypervisor", .syntax = "hypervisor",
    .summary = "a qcow2 overlay on the hypervisor; the device export is its "
               "version, read-only",
  },
  [DF_CACHE_PRIVATE] = {
    .kind = DF_CACHE_PRIVATE, .name = "private", .syntax = "private",
    .summary = "private image: a permanent layer over the version it was "
               "made over; never reset (device export saves it)",
    .open_store = df_cache_private_open, .files = private_files,
    .label = "private image", .persistent = true, .survives_reset = true, .pins_base = true,
  },
};

const DfCacheModeDesc *
df_cache_mode_desc (const DfCacheMode *m)
{
  g_return_val_if_fail (m != NULL && (guint) m->kind < DF_CACHE_N_KINDS,
                        NULL);
  return &modes[m->kind];
}

const char *
df_cache_mode_default (void)
{
  return modes[DF_CACHE_SERVER].name;
}

const DfCacheModeDesc *
df_cache_modes (guint *n)
{
  *n = G_N_ELEMENTS (modes);
  return modes;
}

const char *
df_cache_modes_expected (void)
{
  static gsize once = 0;
  static char *text;

  if (g_once_init_enter (&once))
    {
      GString *s = g_string_new (NULL);
      for (guint i = 0; i < G_N_ELEMENTS (modes); i++)
        g_string_append_printf (s, "%s%s",
                                i == 0 ? ""
                                : i + 1 == G_N_ELEMENTS (modes) ? " or "
                                                                : ", ",
                                modes[i].syntax);
      text = g_string_free (s, FALSE);
      g_once_init_leave (&once, 1);
    }
  return text;
}

/* ---- grammar --------------------------------------------------------------- */

/* The row spelled s: "name" or "name:arg" for a row with an argument.
 * *arg receives the argument (inside s) or NULL. */
static const DfCacheModeDesc *
find_row (const char *s, const char **arg)
{
  for (guint i = 0; i < G_N_ELEMENTS (modes); i++)
    {
      const DfCacheModeDesc *d = &modes[i];
      size_t n = strlen (d->name);

      if (strncmp (s, d->name, n) != 0)
        continue;
      if (d->parse_arg == NULL && s[n] == '\0')
        return *arg = NULL, d;
      if (d->parse_arg != NULL && s[n] == ':')
        return *arg = s + n + 1, d;
    }
  return NULL;
}

bool
df_cache_mode_parse (const char *s, DfCacheMode *out, GError **err)
{
  DfCacheMode m = { 0 };
  const DfCacheModeDesc *d;
  const char *arg;

  if (s == NULL || *s == '\0')
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "empty cache mode (expected %s)",
                   df_cache_modes_expected ());
      return false;
    }
  d = find_row (s, &arg);
  if (d == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "unknown cache mode \"%s\" (expected %s)", s,
                   df_cache_modes_expected ());
      return false;
    }
  m.kind = d->kind;
  if (d->parse_arg != NULL && !d->parse_arg (arg, s, &m, err))
    return false;
  *out = m;
  return true;
}

/* Returns a new string (caller frees). */
char *
df_cache_mode_to_string (const DfCacheMode *m)
{
  const DfCacheModeDesc *d = df_cache_mode_desc (m);
  g_autofree char *arg = NULL;

  g_return_val_if_fail (d != NULL, NULL);
  if (d->format_arg == NULL)
    return g_strdup (d->name);
  arg = d->format_arg (m);
  return g_strdup_printf ("%s:%s", d->name, arg);
}

bool
df_cache_mode_is_persistent (const DfCacheMode *m)
{
  return df_cache_mode_desc (m)->persistent;
}
