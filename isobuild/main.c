/* isobuild: master a deterministic bootable ISO from a directory tree.
 *
 *   isobuild [OPTIONS] -o OUT.iso DIR [ISO-PATH=HOST-FILE ...]
 *
 * Errors end as one line "isobuild: <message>" and exit 1. */
#include "isobuild.h"
#include "common.h"
#include "config.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char *output;
  char *volume_id;
  char *bios_boot;
  char *catalog;
  char *hybrid_mbr;
  char *efi_boot;
  char *efi_binary;
  gint64 epoch;
  gboolean version;
} CliOpts;

/* "iso/path=host/file": an extra file.  Returns false + err when malformed. */
static bool
add_mapping (IsoBuild *b, const char *arg, GError **err)
{
  const char *eq = strchr (arg, '=');
  if (eq == NULL || eq == arg || eq[1] == '\0')
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH,
                   "'%s' is neither a directory nor ISO-PATH=HOST-FILE", arg);
      return false;
    }
  g_autofree char *iso = g_strndup (arg, eq - arg);
  return isobuild_add_file (b, iso, eq + 1, err);
}

static bool
add_inputs (IsoBuild *b, int argc, char **argv, GError **err)
{
  for (int i = 1; i < argc; i++)
    {
      bool ok = g_file_test (argv[i], G_FILE_TEST_IS_DIR)
                ? isobuild_add_tree (b, "", argv[i], err)
                : add_mapping (b, argv[i], err);
      if (!ok)
        return false;
    }
  return true;
}

static bool
run (CliOpts *o, int argc, char **argv, GError **err)
{
  if (o->output == NULL)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH, "missing -o OUT");
      return false;
    }
  if (argc < 2)
    {
      g_set_error (err, ISOBUILD_ERROR, ISOBUILD_ERROR_PATH,
                   "missing input directory or ISO-PATH=HOST-FILE");
      return false;
    }
  if (o->epoch < 0 && !isobuild_default_epoch (&o->epoch, err))
    return false;
  g_autoptr(IsoBuild) b = isobuild_new (err);
  if (b == NULL || !add_inputs (b, argc, argv, err))
    return false;
  if (o->efi_binary != NULL)
    {
      g_autoptr(GBytes) img = isobuild_make_efi_image (o->efi_binary,
                                                       o->epoch, err);
      if (img == NULL)
        return false;
      if (o->efi_boot == NULL)
        o->efi_boot = g_strdup ("efi/efiboot.img");
      gsize len = 0;
      const void *data = g_bytes_get_data (img, &len);
      if (!isobuild_add_data (b, o->efi_boot, data, len, err))
        return false;
    }
  IsoBuildOpts opts = {
    .volume_id = o->volume_id, .bios_boot = o->bios_boot,
    .boot_catalog = o->catalog, .hybrid_mbr = o->hybrid_mbr,
    .efi_boot = o->efi_boot, .epoch = o->epoch,
  };
  return isobuild_write (b, &opts, o->output, err);
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  CliOpts o = { .epoch = -1 };
  const GOptionEntry entries[] = {
    { "output", 'o', 0, G_OPTION_ARG_FILENAME, &o.output,
      "Write the ISO to OUT (temporary file + rename)", "OUT" },
    { "volume-id", 'V', 0, G_OPTION_ARG_STRING, &o.volume_id,
      "Volume ID (default DISKFARM)", "ID" },
    { "bios-boot", 'b', 0, G_OPTION_ARG_STRING, &o.bios_boot,
      "El Torito BIOS no-emulation image (ISO path, boot info table "
      "patched), e.g. isolinux/isolinux.bin", "ISO-PATH" },
    { "catalog", 'c', 0, G_OPTION_ARG_STRING, &o.catalog,
      "Boot catalog ISO path (default: boot.cat beside the boot image)",
      "ISO-PATH" },
    { "isohybrid-mbr", 0, 0, G_OPTION_ARG_FILENAME, &o.hybrid_mbr,
      "Make the ISO bootable as a disk with this syslinux MBR "
      "(isohdpfx.bin)", "FILE" },
    { "efi-boot", 'e', 0, G_OPTION_ARG_STRING, &o.efi_boot,
      "UEFI El Torito entry: a FAT image already in the tree", "ISO-PATH" },
    { "efi-binary", 0, 0, G_OPTION_ARG_FILENAME, &o.efi_binary,
      "Make a FAT image holding FILE as EFI/BOOT/BOOTX64.EFI and use it "
      "as the UEFI entry (at --efi-boot, default efi/efiboot.img)", "FILE" },
    { "epoch", 0, 0, G_OPTION_ARG_INT64, &o.epoch,
      "Timestamp of every file and volume date (default: "
      "$SOURCE_DATE_EPOCH, else 2027-01-01)", "SECONDS" },
    { "version", 0, 0, G_OPTION_ARG_NONE, &o.version, "Print the version",
      NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr(GOptionContext) oc =
    g_option_context_new ("DIR|ISO-PATH=HOST-FILE ...");
  g_option_context_set_summary (oc, "Master a deterministic ISO 9660 image "
    "(Joliet, Rock Ridge, El Torito, isohybrid) with libisofs.");
  g_option_context_set_description (oc, "Example:\n  isobuild -o boot.iso "
    "-b isolinux/isolinux.bin --isohybrid-mbr "
    "/usr/lib/ISOLINUX/isohdpfx.bin tree/\n");
  g_option_context_add_main_entries (oc, entries, NULL);
  g_autoptr(GError) err = NULL;
  bool ok = g_option_context_parse (oc, &argc, &argv, &err)
            && df_options_check_values (entries, NULL, &err);
  if (ok && o.version)
    {
      printf ("isobuild (diskfarm) %s\n", DF_VERSION);
      return 0;
    }
  ok = ok && run (&o, argc, argv, &err);
  if (!ok)
    fprintf (stderr, "isobuild: %s\n", err->message);
  g_free (o.output);
  g_free (o.volume_id);
  g_free (o.bios_boot);
  g_free (o.catalog);
  g_free (o.hybrid_mbr);
  g_free (o.efi_boot);
  g_free (o.efi_binary);
  return ok ? 0 : 1;
}
