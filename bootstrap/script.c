/* diskfarm bootstrap: iPXE boot scripts.  See script.h.
 *
 * The iSCSI URI is iscsi:<server>::<port>:<lun>:<target> with LUN 1 (the
 * device's disk; LUN 0 is a controller on some targets).  Several URIs on
 * one sanboot line give iPXE multipath: it tries them in order. */
#include "script.h"

#include <string.h>

static gboolean
chap_value_ok (const char *s)
{
  if (!s || !*s || strlen (s) > 255)
    return FALSE;
  for (; *s; s++)
    if (!g_ascii_isalnum (*s) && !strchr ("._:@+=/-", *s))
      return FALSE;
  return TRUE;
}

/* Text safe inside an iPXE echo: no ${ expansion, no newline, no '#'. */
static char *
sanitize (const char *s)
{
  char *out = g_strdup (s ? s : "");
  for (char *c = out; *c; c++)
    if (!g_ascii_isprint (*c) || strchr ("$#\\{}|&;", *c))
      *c = '_';
  return out;
}

static void
append_uris (GString *gs, const DfScriptParams *p)
{
  for (guint i = 0; i < p->n_targets; i++)
    g_string_append_printf (gs, " iscsi:%s::%u:1:" DF_IQN_PREFIX "%s",
                            p->targets[i].address, p->targets[i].port,
                            p->device);
}

char *
df_script_render (const DfScriptParams *p, gboolean *chap_dropped)
{
  GString *gs = g_string_new ("#!ipxe\n");
  g_autofree char *vdisk = sanitize (p->vdisk);
  g_autofree char *by = sanitize (p->rendered_by);
  g_string_append_printf (gs, "# diskfarm boot script for %s, rendered by %s\n",
                          p->device, by);
  g_string_append_printf (gs, "set initiator-iqn " DF_IQN_PREFIX "%s\n",
                          p->device);
  *chap_dropped = FALSE;
  if (p->chap_user || p->chap_secret)
    {
      if (chap_value_ok (p->chap_user) && chap_value_ok (p->chap_secret))
        g_string_append_printf (gs, "set username %s\nset password %s\n",
                                p->chap_user, p->chap_secret);
      else
        *chap_dropped = TRUE;
    }
  g_string_append_printf (gs, "echo diskfarm: booting %s from vDisk %s "
                          "(boot generation %" G_GINT64_FORMAT ", %u "
                          "server%s)\n", p->device, vdisk, p->generation,
                          p->n_targets, p->n_targets == 1 ? "" : "s");
  g_string_append (gs, "sanboot");
  append_uris (gs, p);
  g_string_append (gs, " || goto failed\n"
                   ":failed\n"
                   "echo diskfarm: sanboot failed, rebooting in 10 seconds\n"
                   "sleep 10\n"
                   "reboot\n");
  return g_string_free (gs, FALSE);
}

char *
df_script_message (const char *title, const char *message)
{
  g_autofree char *t = sanitize (title);
  g_autofree char *m = sanitize (message);
  return g_strdup_printf ("#!ipxe\n"
                          "echo\n"
                          "echo ==================================================\n"
                          "echo diskfarm: %s\n"
                          "echo %s\n"
                          "echo ==================================================\n"
                          "echo rebooting in 30 seconds\n"
                          "sleep 30\n"
                          "reboot\n", t, m);
}
