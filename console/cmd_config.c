/* diskfarm console: `config get` and `config show`: what diskfarm.conf
 * (lib/common/conf.c) says, for people and for scripts such as the
 * libvirt hook.  The values are the file's, or the built-in defaults. */
#include "console.h"

#include <stdio.h>

/* The farm DB's value may hold a password: never printed. */
static char *
shown_value (const char *dotted, char *value)
{
  if (value == NULL || g_strcmp0 (dotted, "farm.database") != 0)
    return value;
  char *shown = df_farm_db_redact (value);
  g_free (value);
  return shown;
}

static bool
config_get (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "config get", "GROUP.KEY", 1, 1,
    "Print one value of diskfarm.conf (the file's, else the built-in "
    "default; lists joined by ';'; nothing when the key has no value; "
    "farm.database without its password).  "
    "Exit 1 for a key diskfarm.conf does not have.",
    "  diskfarm config get farm.dir\n"
    "  diskfarm config get streamsvc.nbd-listen\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_autoptr (GError) e = NULL;
  g_autofree char *value = shown_value (argv[1],
    df_conf_get_text (ctx->conf, argv[1], &e));
  if (e != NULL)
    {
      g_propagate_error (err, g_steal_pointer (&e));
      return false;
    }
  g_autoptr (DfRecord) r = df_record_new ();
  df_record_str (r, "key", "key", argv[1]);
  df_record_str (r, "value", "value", value);
  if (ctx->json)
    df_print_result (r, true, "%s", "");
  else if (value != NULL)
    printf ("%s\n", value);
  return true;
}

/* Where group.key's value comes from: "FILE:LINE", "default" or NULL. */
static char *
config_source (const DfConf *c, const DfConfKey *k, const char *value)
{
  if (df_conf_is_set (c, k->group, k->key))
    return g_strdup_printf ("%s:%d", df_conf_file (c),
                            df_conf_line (c, k->group, k->key));
  return value != NULL ? g_strdup ("default") : NULL;
}

static bool
config_show (DfCtx *ctx, int argc, char **argv, GError **err)
{
  static const DfCmdSpec spec = {
    "config show", "", 0, 0,
    "List every key of diskfarm.conf with its value, where the value "
    "comes from (the file or the built-in default) and what it does.",
    "  diskfarm config show\n"
    "  diskfarm --config /srv/site.conf --json config show\n",
  };
  if (!df_cmd_parse (ctx, &spec, NULL, &argc, &argv, err))
    return false;
  g_autoptr (GPtrArray) records = df_record_list_new ();
  for (const DfConfKey *k = df_conf_schema; k->group != NULL; k++)
    {
      if (k->alias_of != NULL)
        continue;
      g_autofree char *dotted = g_strdup_printf ("%s.%s", k->group, k->key);
      g_autofree char *value = shown_value (dotted,
        df_conf_get_text (ctx->conf, dotted, err));
      g_autofree char *source = config_source (ctx->conf, k, value);
      DfRecord *r = df_record_new ();
      df_record_str (r, "key", "key", dotted);
      df_record_str (r, "value", "value", value);
      df_record_str (r, "source", "source", source);
      df_record_str (r, "help", NULL, k->help);
      g_ptr_array_add (records, r);
    }
  df_print_list (records, ctx->json, "no keys");
  return true;
}

const DfCmd df_config_cmds[] = {
  { "get", "print one value of diskfarm.conf", config_get },
  { "show", "list every key, its value and where it comes from",
    config_show },
  { NULL, NULL, NULL }
};
