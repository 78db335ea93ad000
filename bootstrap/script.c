/* diskfarm bootstrap: iPXE boot scripts.  See script.h.
 *
 * The iSCSI URI is iscsi:<server>::<port>:<lun>:<target> with LUN 1 (the
 * device's disk; LUN 0 is a controller on some targets).  Several URIs on
 * one sanboot line give iPXE multipath: it tries them in order. */
#include "script.h"
#include "common.h"

#include <openssl/crypto.h>
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

/* Text safe inside an iPXE echo: no ${ expansion, no newline, no '#', no
 * quote that would unbalance iPXE's argument quoting. */
static char *
sanitize (const char *s)
{
  char *out = g_strdup (s ? s : "");
  for (char *c = out; *c; c++)
    if (!g_ascii_isprint (*c) || strchr ("$#\\{}|&;\"'`", *c))
      *c = '_';
  return out;
}

/* Non-empty, at most max bytes, every byte alphanumeric or in extra. */
static gboolean
word_ok (const char *s, size_t max, const char *extra)
{
  if (!s || !*s || strlen (s) > max)
    return FALSE;
  for (; *s; s++)
    if (!g_ascii_isalnum (*s) && !strchr (extra, *s))
      return FALSE;
  return TRUE;
}

/* Device names and server addresses go into commands unquoted: refuse
 * anything that could carry iPXE syntax (space, newline, ${, ||, #). */
static gboolean
device_ok (const char *device)
{
  return word_ok (device, 200, "._-");
}

static gboolean
address_ok (const char *a)
{
  size_t n = a ? strlen (a) : 0;
  if (n > 2 && a[0] == '[' && a[n - 1] == ']')
    {
      g_autofree char *inner = g_strndup (a + 1, n - 2);
      return word_ok (inner, 253, ":.") && strchr (inner, ':');
    }
  return word_ok (a, 253, ".-_:");
}

/* iscsi:<server>::... : an IPv6 literal needs brackets, or its colons
 * would be read as the URI's field separators. */
static void
append_uris (GString *gs, const DfScriptParams *p)
{
  for (guint i = 0; i < p->n_targets; i++)
    {
      const char *a = p->targets[i].address;
      gboolean v6 = a[0] != '[' && strchr (a, ':') != NULL;
      g_string_append_printf (gs, " iscsi:%s%s%s::%u:1:" DF_IQN_PREFIX "%s",
                              v6 ? "[" : "", a, v6 ? "]" : "",
                              p->targets[i].port, p->device);
    }
}

/* A vDisk for one firmware only: iPXE's ${platform} ("pcbios" or "efi")
 * must match, or the script jumps to the refusal. */
static void
append_firmware_check (GString *gs, const DfScriptParams *p)
{
  if (p->no_bios && p->no_uefi)
    g_string_append (gs, "goto wrong_firmware\n");
  else if (p->no_bios)
    g_string_append (gs, "iseq ${platform} efi || goto wrong_firmware\n");
  else if (p->no_uefi)
    g_string_append (gs, "iseq ${platform} pcbios || goto wrong_firmware\n");
}

static void
append_firmware_refusal (GString *gs, const DfScriptParams *p,
                         const char *vdisk)
{
  if (!p->no_bios && !p->no_uefi)
    return;
  const char *boots = p->no_bios && p->no_uefi ? "neither BIOS nor UEFI "
                      "(no boot code, no EFI/BOOT/BOOTX64.EFI)"
                      : p->no_bios ? "UEFI only" : "BIOS only";
  g_string_append_printf (gs, ":wrong_firmware\n"
    "echo diskfarm: vDisk %s boots under %s, but this machine runs ${platform} "
    "firmware\n"
    "echo diskfarm: switch its firmware (BIOS/CSM or UEFI), assign a vDisk "
    "made for it, or give the vDisk an EFI loader (vdisk set --efi-loader)\n"
    "echo diskfarm: rebooting in 30 seconds\n"
    "sleep 30\n"
    "reboot\n", vdisk, boots);
}

char *
df_script_render (const DfScriptParams *p, gboolean *chap_dropped)
{
  *chap_dropped = FALSE;
  if (!device_ok (p->device))
    return NULL;
  if (p->efi_loader && !word_ok (p->efi_loader, 255, "._-\\"))
    return NULL;
  for (guint i = 0; i < p->n_targets; i++)
    if (!address_ok (p->targets[i].address))
      return NULL;
  /* Sized up front: a GString that grows would leave copies of the CHAP
   * secret in freed memory. */
  GString *gs = g_string_sized_new (4096);
  g_string_append (gs, "#!ipxe\n");
  g_autofree char *vdisk = sanitize (p->vdisk);
  g_autofree char *by = sanitize (p->rendered_by);
  g_string_append_printf (gs, "# diskfarm boot script for %s, rendered by %s\n",
                          p->device, by);
  g_autofree char *iqn = df_device_initiator_iqn (p->device);
  g_string_append_printf (gs, "set initiator-iqn %s\n", iqn);
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
  if (p->note)
    {
      g_autofree char *note = sanitize (p->note);
      g_string_append_printf (gs, "echo diskfarm: %s\n", note);
    }
  append_firmware_check (gs, p);
  if (p->efi_loader && !p->no_uefi)
    {
      if (!p->no_bios)
        g_string_append (gs, "iseq ${platform} efi || goto sanboot_bios\n");
      g_string_append_printf (gs, "sanboot --filename %s", p->efi_loader);
      append_uris (gs, p);
      g_string_append (gs, " || goto failed\n");
    }
  if (!p->efi_loader || (!p->no_bios && !p->no_uefi))
    {
      if (p->efi_loader)
        g_string_append (gs, ":sanboot_bios\n");
      g_string_append (gs, "sanboot");
      append_uris (gs, p);
      g_string_append (gs, " || goto failed\n");
    }
  g_string_append (gs, ":failed\n"
                   "echo diskfarm: sanboot failed, rebooting in 10 seconds\n"
                   "sleep 10\n"
                   "reboot\n");
  append_firmware_refusal (gs, p, vdisk);
  return g_string_free (gs, FALSE);
}

void
df_script_free (char *script)
{
  if (!script)
    return;
  OPENSSL_cleanse (script, strlen (script));
  g_free (script);
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
