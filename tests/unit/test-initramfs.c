/* Unit tests: reading an initramfs (lib/vdisk/initramfs.c): concatenated
 * cpio newc archives, plain and gzip-compressed, the take-over verdicts,
 * and malformed input (each failure its own message). */
#include "initramfs.h"

#include "common.h"

#include <gio/gio.h>
#include <string.h>

/* Append one newc entry (a regular file, or the trailer when name is
 * "TRAILER!!!"). */
static void
cpio_add (GByteArray *a, const char *name, const char *data)
{
  gsize dl = data ? strlen (data) : 0, nl = strlen (name) + 1;
  char hdr[111];
  g_snprintf (hdr, sizeof hdr,
              "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
              1u, 0100644u, 0u, 0u, 1u, 0u, (guint) dl, 0u, 0u, 0u, 0u,
              (guint) nl, 0u);
  g_byte_array_append (a, (const guint8 *) hdr, 110);
  g_byte_array_append (a, (const guint8 *) name, (guint) nl);
  while (a->len % 4)
    g_byte_array_append (a, (const guint8 *) "", 1);
  if (dl)
    g_byte_array_append (a, (const guint8 *) data, (guint) dl);
  while (a->len % 4)
    g_byte_array_append (a, (const guint8 *) "", 1);
}

/* An archive of NULL-terminated (name, data) pairs + the trailer. */
static GByteArray *
cpio (const char *const *entries)
{
  GByteArray *a = g_byte_array_new ();
  for (guint i = 0; entries[i]; i += 2)
    cpio_add (a, entries[i], entries[i + 1]);
  cpio_add (a, "TRAILER!!!", NULL);
  return a;
}

static GByteArray *
gzip (GByteArray *in)
{
  g_autoptr (GZlibCompressor) z = g_zlib_compressor_new (G_ZLIB_COMPRESSOR_FORMAT_GZIP, 6);
  GByteArray *out = g_byte_array_new ();
  guint8 buf[65536];
  gsize rd, wr;
  g_assert_cmpint (g_converter_convert (G_CONVERTER (z), in->data, in->len, buf,
                                        sizeof buf, G_CONVERTER_INPUT_AT_END,
                                        &rd, &wr, NULL),
                   ==, G_CONVERTER_FINISHED);
  g_byte_array_append (out, buf, (guint) wr);
  return out;
}

typedef struct
{
  const char *name;
  const char *entries[12];
  bool compress; /* the entries gzip'ed after an early microcode archive */
  bool iscsi, nbd;
  const char *flavour;
  const char *why; /* a word of the iSCSI verdict */
} Case;

static const Case cases[] = {
  { "debian ISCSI_AUTO", { "./scripts/local", "", "./scripts/local-top/iscsi", "#",
      "./etc/iscsi.initramfs", "ISCSI_AUTO=true\n", "./usr/sbin/iscsistart", "ELF",
      NULL }, true, true, false, "initramfs-tools", "ISCSI_AUTO=true" },
  { "debian without ISCSI_AUTO", { "scripts/local", "", "scripts/local-top/iscsi", "#",
      "sbin/iscsistart", "ELF", "sbin/nbd-client", "ELF", NULL },
    false, false, true, "initramfs-tools", "without ISCSI_AUTO" },
  { "debian ISCSI_AUTO=false", { "scripts/local", "", "scripts/local-top/iscsi", "#",
      "etc/iscsi.initramfs", "ISCSI_AUTO=false\n#ISCSI_AUTO=true\n", NULL },
    false, false, false, "initramfs-tools", "without ISCSI_AUTO" },
  { "debian without open-iscsi", { "scripts/local", "", "usr/sbin/nbd-client", "ELF", NULL },
    true, false, true, "initramfs-tools", "install open-iscsi" },
  { "dracut iscsi", { "usr/lib/dracut/modules.txt", "", "usr/sbin/iscsistart", "ELF", NULL },
    false, true, false, "dracut", "rd.iscsi.firmware" },
  { "dracut without iscsi", { "usr/lib/dracut/modules.txt", "", NULL },
    false, false, false, "dracut", "dracut --add iscsi" },
  { "small", { "init", "#!/bin/sh", "sbin/iscsistart", "ELF", "sbin/nbd-client", "ELF", NULL },
    false, true, true, "other", "iscsistart -b" },
  { "busybox only", { "init", "#!/bin/sh", "bin/busybox", "ELF", "lib/iscsistart.txt", "", NULL },
    true, false, false, "other", "no iscsistart" },
};

static void
test_case (gconstpointer p)
{
  const Case *c = p;
  g_autoptr (GByteArray) a = cpio (c->entries);
  if (c->compress)
    {
      static const char *const early[] = { "kernel/x86/microcode/GenuineIntel.bin", "x", NULL };
      g_autoptr (GByteArray) z = gzip (a);
      g_byte_array_set_size (a, 0);
      g_autoptr (GByteArray) e = cpio (early);
      g_byte_array_append (a, e->data, e->len);
      g_byte_array_append (a, (const guint8 *) "\0\0\0\0\0\0\0\0", 8); /* padding */
      g_byte_array_append (a, z->data, z->len);
    }
  DfInitramfs ir;
  g_autoptr (GError) err = NULL;
  g_assert_true (df_initramfs_scan (a->data, a->len, &ir, &err));
  g_assert_no_error (err);
  const char *iwhy, *nwhy;
  g_assert_cmpint (df_initramfs_iscsi_root (&ir, &iwhy), ==, c->iscsi);
  g_assert_cmpint (df_initramfs_nbd_root (&ir, &nwhy), ==, c->nbd);
  g_assert_cmpstr (df_initramfs_flavour (&ir), ==, c->flavour);
  g_assert_nonnull (strstr (iwhy, c->why));
}

typedef struct
{
  const char *name;
  gsize cut;        /* keep this many bytes of a good archive (0: all) */
  gssize poke_at;   /* overwrite a byte there (-1: none) */
  char poke;
  const char *message;
} Bad;

static const Bad bads[] = {
  { "empty", 1, -1, 0, "not an initramfs" },
  { "header cut", 60, -1, 0, "truncated at byte 0" },
  { "name cut", 115, -1, 0, "truncated at byte 0" },
  { "data cut", 120, -1, 0, "truncated at byte 0" },
  { "no trailer", 128, -1, 0, "truncated at byte 128" },
  { "bad hex", 0, 60, 'g', "bad cpio header at byte 0" },
  { "bad magic", 0, 5, '7', "no cpio header at byte 0" },
  { "second header bad", 0, 129, 'x', "no cpio header at byte 128" },
};

static void
test_bad (gconstpointer p)
{
  const Bad *b = p;
  static const char *const ents[] = { "init", "#!/bin/sh\n", NULL };
  g_autoptr (GByteArray) a = cpio (ents); /* entry: 128 bytes, then the trailer */
  g_assert_cmpuint (a->len, >, 128);
  if (b->cut)
    g_byte_array_set_size (a, (guint) b->cut);
  if (b->poke_at >= 0)
    a->data[b->poke_at] = (guint8) b->poke;
  if (strcmp (b->name, "empty") == 0)
    a->data[0] = 0;
  DfInitramfs ir;
  g_autoptr (GError) err = NULL;
  g_assert_false (df_initramfs_scan (a->data, a->len, &ir, &err));
  g_assert_nonnull (err);
  if (!strstr (err->message, b->message))
    g_error ("%s: got \"%s\", want \"%s\"", b->name, err->message, b->message);
}

static void
test_not_initramfs (void)
{
  DfInitramfs ir;
  g_autoptr (GError) err = NULL;
  const char text[] = "hello, this is a text file\n";
  g_assert_false (df_initramfs_scan ((const guint8 *) text, sizeof text - 1, &ir, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_nonnull (strstr (err->message, "no cpio archive, no known compression"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/initramfs/verdict/%s", cases[i].name);
      g_test_add_data_func (path, &cases[i], test_case);
    }
  for (guint i = 0; i < G_N_ELEMENTS (bads); i++)
    {
      g_autofree char *path = g_strdup_printf ("/initramfs/malformed/%s", bads[i].name);
      g_test_add_data_func (path, &bads[i], test_bad);
    }
  g_test_add_func ("/initramfs/not-initramfs", test_not_initramfs);
  return g_test_run ();
}
