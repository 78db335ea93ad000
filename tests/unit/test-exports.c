/* Unit tests: export names, the export registry over a real farm built
 * here (farm DB + qcow2 chain + write caches), and the admin HTTP server
 * (health, sessions, metrics) fetched with a SoupSession. */
#include "test-db.h"
#include <errno.h>
#include <glib/gstdio.h>
#include <gio/gunixsocketaddress.h>
#include <libsoup/soup.h>
#include <string.h>
#include <sys/stat.h>

#include "admin.h"
#include "blk_fence.h"
#include "common.h"
#include "exports.h"
#include "farm.h"
#include "nbd.h"
#include "sessions.h"
#include "test-nbd-opt.h"

#define MiB (1024u * 1024)
#define DISK_SIZE (1 * MiB)
#define CLUSTER_BITS 16
#define CLUSTER (1u << CLUSTER_BITS)

/* ---- export name grammar (no farm) ------------------------------------ */

static const struct
{
  const char *name;
  bool ok;
  DfExportKind kind;
  const char *object;
  int version;
} name_cases[] = {
  { "vdisk/web", true, DF_EXPORT_KIND_VDISK, "web", -1 },
  { "vdisk/web@0", true, DF_EXPORT_KIND_VDISK, "web", 0 },
  { "vdisk/web@12", true, DF_EXPORT_KIND_VDISK, "web", 12 },
  { "vdisk/w.e_b-1@2147483647", true, DF_EXPORT_KIND_VDISK, "w.e_b-1",
    2147483647 },
  { "device/pc01", true, DF_EXPORT_KIND_DEVICE, "pc01", -1 },
  { "device/52:54:00:12:34:56", true, DF_EXPORT_KIND_DEVICE,
    "52:54:00:12:34:56", -1 },
  { "device/52-54-00-12-34-56", true, DF_EXPORT_KIND_DEVICE,
    "52-54-00-12-34-56", -1 },
  { "", false, 0, NULL, 0 },
  { "web", false, 0, NULL, 0 },
  { "vdisk", false, 0, NULL, 0 },
  { "vdisk/", false, 0, NULL, 0 },
  { "vdisk/@1", false, 0, NULL, 0 },
  { "vdisk/web@", false, 0, NULL, 0 },
  { "vdisk/web@-1", false, 0, NULL, 0 },
  { "vdisk/web@+1", false, 0, NULL, 0 },
  { "vdisk/web@01", false, 0, NULL, 0 },
  { "vdisk/web@ 1", false, 0, NULL, 0 },
  { "vdisk/web@1 ", false, 0, NULL, 0 },
  { "vdisk/web@1x", false, 0, NULL, 0 },
  { "vdisk/web@0x10", false, 0, NULL, 0 },
  { "vdisk/web@2147483648", false, 0, NULL, 0 },
  { "vdisk/web@99999999999999999999", false, 0, NULL, 0 },
  { "vdisk/web@1@2", false, 0, NULL, 0 },
  { "vdisk/../etc", false, 0, NULL, 0 },
  { "vdisk/a/b", false, 0, NULL, 0 },
  { "vdisk/.hidden", false, 0, NULL, 0 },
  { "vdisk/-dash", false, 0, NULL, 0 },
  { "VDISK/web", false, 0, NULL, 0 },
  { "/vdisk/web", false, 0, NULL, 0 },
  { "vdisk//web", false, 0, NULL, 0 },
  { "device/", false, 0, NULL, 0 },
  { "device/pc01@1", false, 0, NULL, 0 },
  { "device/pc 01", false, 0, NULL, 0 },
  { "device/../pc01", false, 0, NULL, 0 },
  { "device/52:54:00:12:34", false, 0, NULL, 0 },
  { "device/52:54:00:12:34:5g", false, 0, NULL, 0 },
  { "iqn.2026-11.org.diskfarm:pc01", false, 0, NULL, 0 },
  { "vdisk/0123456789012345678901234567890123456789012345678901234567890123",
    false, 0, NULL, 0 }, /* 64 chars: over the name limit */
};

static void
test_name_parse (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (name_cases); i++)
    {
      g_autoptr (GError) err = NULL;
      g_autofree char *object = NULL;
      DfExportKind kind = 0;
      int version = -7;
      bool ok = df_export_name_parse (name_cases[i].name, &kind, &object,
                                      &version, &err);

      g_test_message ("%s", name_cases[i].name);
      g_assert_cmpint (ok, ==, name_cases[i].ok);
      if (!ok)
        {
          g_autofree char *msg
              = g_strdup_printf ("unknown export '%s'", name_cases[i].name);

          g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
          g_assert_cmpstr (err->message, ==, msg);
          g_assert_null (object);
          continue;
        }
      g_assert_no_error (err);
      g_assert_cmpint (kind, ==, name_cases[i].kind);
      g_assert_cmpstr (object, ==, name_cases[i].object);
      g_assert_cmpint (version, ==, name_cases[i].version);
    }
}

/* ---- a real farm ------------------------------------------------------ */

typedef struct
{
  char *dir;
  DfFarm *farm; /* the test's own handle (console side) */
  DfExports *ex;
} Fixture;

/* Version N of vdisk web: cluster 0 filled with fill, backing N-1. */
static void
make_version (Fixture *f, const char *vdisk, int number, char fill,
              DfVersionState state)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *path = df_farm_version_path (f->farm, vdisk, number);
  g_autofree char *base = g_path_get_basename (path);
  g_autofree char *backing
      = number > 0 ? g_strdup_printf ("%s.%d.qcow2", vdisk, number - 1) : NULL;
  g_autofree char *store = df_farm_store_dir (f->farm, vdisk);
  g_autofree guint8 *data = g_malloc (CLUSTER);
  df_qcow2_writer *w;
  char sha[65];
  GStatBuf st;

  g_assert_cmpint (g_mkdir_with_parents (store, 0755), ==, 0);
  memset (data, fill, CLUSTER);
  w = df_qcow2_writer_new (path, DISK_SIZE, CLUSTER_BITS, backing, &err);
  g_assert_no_error (err);
  g_assert_true (df_qcow2_writer_put (w, 0, data, &err));
  g_assert_true (df_qcow2_writer_finish (w, &err));
  g_assert_no_error (err);
  g_assert_true (df_file_sha256 (path, sha, &err));
  g_assert_cmpint (g_stat (path, &st), ==, 0);
  if (number == 0)
    g_assert_true (df_farm_vdisk_add (f->farm, vdisk, DISK_SIZE, base, sha,
                                      st.st_size, &err));
  else
    g_assert_true (df_farm_version_add (f->farm, vdisk, number, number - 1,
                                        base, sha, DISK_SIZE, st.st_size,
                                        state, &err));
  g_assert_no_error (err);
}

static void
add_device (Fixture *f, const char *name, const char *mac, const char *type,
            const char *cache_mode, uint64_t quota)
{
  g_autoptr (GError) err = NULL;
  DfDevice d = {
    .name = (char *)name,
    .mac = (char *)mac,
    .type = (char *)type,
    .vdisk = (char *)"web",
    .cache_mode = (char *)cache_mode,
    .quota = quota,
  };

  g_assert_true (df_farm_device_add (f->farm, &d, &err));
  g_assert_no_error (err);
}

/* web: v0 'A' (production), v1 'B' (production), v2 'C' (test).
 * pc01 production/server, pc02 test/ram:16, pc03 production/persistent,
 * pc04 production/server with a 64 KiB quota. */
static void
fixture_setup (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;

  f->dir = g_dir_make_tmp ("df-exports-XXXXXX", &err);
  g_assert_no_error (err);
  f->farm = test_farm_open (f->dir, true, "test", &err);
  g_assert_no_error (err);
  make_version (f, "web", 0, 'A', DF_VSTATE_PRODUCTION);
  make_version (f, "web", 1, 'B', DF_VSTATE_PRODUCTION);
  make_version (f, "web", 2, 'C', DF_VSTATE_TEST);
  add_device (f, "pc01", "52:54:00:00:00:01", "production", "server", 0);
  add_device (f, "pc02", "52:54:00:00:00:02", "test", "ram:16", 0);
  add_device (f, "pc03", "52:54:00:00:00:03", "production",
              "server-persistent", 0);
  add_device (f, "pc04", "52:54:00:00:00:04", "production", "server",
              64 * 1024);
  f->ex = df_exports_new (f->dir, test_db_for (f->dir), &err);
  g_assert_no_error (err);
}

static void
fixture_teardown (Fixture *f, gconstpointer data)
{
  g_autofree char *argv_rm = NULL;

  df_exports_free (f->ex);
  df_farm_close (f->farm);
  argv_rm = g_strdup_printf ("rm -rf '%s'", f->dir);
  g_assert_cmpint (system (argv_rm), ==, 0);
  g_free (f->dir);
}

static DfExport *
open_ok (Fixture *f, const char *name)
{
  g_autoptr (GError) err = NULL;
  DfExport *e = df_exports_open (f->ex, name, &err);

  g_assert_no_error (err);
  g_assert_nonnull (e);
  return e;
}

/* First byte of the export at offset (asserts every byte of 512 is it). */
static char
first_byte (DfExport *e, uint64_t offset)
{
  char buf[512];
  int errnum = 0;

  g_assert_cmpint (
      df_blk_pread (df_export_blk (e), buf, sizeof buf, offset, &errnum), ==,
      0);
  for (guint i = 1; i < sizeof buf; i++)
    g_assert_cmpint (buf[i], ==, buf[0]);
  return buf[0];
}

static void
write_fill (DfExport *e, uint64_t offset, char fill, uint32_t len)
{
  g_autofree char *buf = g_malloc (len);
  int errnum = 0;

  memset (buf, fill, len);
  g_assert_cmpint (
      df_blk_pwrite (df_export_blk (e), buf, len, offset, 0, &errnum), ==, 0);
}

static void
open_fails (Fixture *f, const char *name, int code, const char *needle)
{
  g_autoptr (GError) err = NULL;

  g_assert_null (df_exports_open (f->ex, name, &err));
  g_assert_error (err, DF_ERROR, code);
  g_assert_nonnull (strstr (err->message, needle));
}

/* ---- registry tests --------------------------------------------------- */

/* e's description is want, then DF_EXPORT_DESC_SHA256 and 64 hex. */
static void
assert_description_hashed (DfExport *e, const char *want)
{
  const char *d = df_export_description (e);
  size_t n = strlen (want), m = strlen (DF_EXPORT_DESC_SHA256);

  g_assert_cmpint (strncmp (d, want, n), ==, 0);
  g_assert_cmpint (strncmp (d + n, DF_EXPORT_DESC_SHA256, m), ==, 0);
  g_assert_cmpuint (strlen (d + n + m), ==, 64);
  g_assert_cmpuint (strspn (d + n + m, "0123456789abcdef"), ==, 64);
}

static void
test_vdisk (Fixture *f, gconstpointer data)
{
  DfExport *top = open_ok (f, "vdisk/web");
  DfExport *top2 = open_ok (f, "vdisk/web@1");
  DfExport *v0 = open_ok (f, "vdisk/web@0");
  DfExport *v2 = open_ok (f, "vdisk/web@2");

  g_assert_true (df_export_readonly (top));
  g_assert_null (df_export_device (top));
  g_assert_cmpstr (df_export_name (top), ==, "vdisk/web");
  /* a sealed version names its file's hash (the relay's cache key) */
  assert_description_hashed (top, "vdisk web v1 (production)");
  assert_description_hashed (v2, "vdisk web v2 (test)");
  g_assert_cmpuint (df_export_blk (top)->size, ==, DISK_SIZE);
  g_assert_cmpint (first_byte (top, 0), ==, 'B');
  g_assert_cmpint (first_byte (v0, 0), ==, 'A');
  g_assert_cmpint (first_byte (v2, 0), ==, 'C');
  g_assert_cmpint (first_byte (v2, CLUSTER), ==, 0);
  /* one chain per version file, shared */
  g_assert_true (df_export_blk (top) == df_export_blk (top2));
  g_assert_true (df_export_blk (top) != df_export_blk (v0));
  df_export_close (top);
  df_export_close (top2);
  df_export_close (v0);
  df_export_close (v2);

  open_fails (f, "vdisk/web@3", DF_ERROR_NOT_FOUND, "'vdisk/web@3'");
  open_fails (f, "vdisk/nope", DF_ERROR_NOT_FOUND, "'vdisk/nope'");
  open_fails (f, "device/nope", DF_ERROR_NOT_FOUND, "'device/nope'");
  open_fails (f, "device/52:54:00:00:00:99", DF_ERROR_NOT_FOUND,
              "'device/52:54:00:00:00:99'");
  open_fails (f, "vdisk/web@01", DF_ERROR_NOT_FOUND,
              "unknown export 'vdisk/web@01'");
  open_fails (f, "nbd", DF_ERROR_NOT_FOUND, "unknown export 'nbd'");
}

static void
test_device_isolation (Fixture *f, gconstpointer data)
{
  DfExport *a = open_ok (f, "device/pc01");
  DfExport *by_mac = open_ok (f, "device/52-54-00-00-00-01");
  DfExport *b = open_ok (f, "device/pc02");
  DfExport *base = open_ok (f, "vdisk/web");

  g_assert_false (df_export_readonly (a));
  g_assert_cmpstr (df_export_device (a), ==, "pc01");
  g_assert_cmpstr (df_export_device (by_mac), ==, "pc01");
  g_assert_cmpstr (df_export_name (by_mac), ==, "device/52-54-00-00-00-01");
  g_assert_true (g_str_has_prefix (df_export_description (a),
                                   "device pc01 cache server gen "));
  g_assert_nonnull (strstr (df_export_description (a), "vdisk web v1"));
  g_assert_nonnull (strstr (df_export_description (b), "cache ram:16"));
  /* a writable export is not the version's content: no hash */
  g_assert_null (strstr (df_export_description (a), DF_EXPORT_DESC_SHA256));
  g_assert_true (df_export_blk (a) == df_export_blk (by_mac));
  g_assert_cmpint (first_byte (a, 0), ==, 'B');
  g_assert_cmpint (first_byte (b, 0), ==, 'C'); /* test device: v2 */
  write_fill (a, 0, 'X', 4096);
  g_assert_cmpint (first_byte (by_mac, 0), ==, 'X');
  g_assert_cmpint (first_byte (b, 0), ==, 'C');
  g_assert_cmpint (first_byte (base, 0), ==, 'B');
  df_export_close (a);
  df_export_close (by_mac);
  df_export_close (b);
  df_export_close (base);
  /* same boot generation: a reconnecting target keeps its writes */
  a = open_ok (f, "device/pc01");
  g_assert_cmpint (first_byte (a, 0), ==, 'X');
  df_export_close (a);
}

static void
test_generation (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfExport *old = open_ok (f, "device/pc01");
  DfExport *fresh;
  gint64 gen = 0;
  char buf[512];
  int errnum = 0;

  write_fill (old, 0, 'X', 4096);
  g_assert_true (df_farm_device_new_generation (f->farm, "pc01", &gen, &err));
  g_assert_no_error (err);
  fresh = open_ok (f, "device/pc01");
  g_assert_true (df_export_blk (fresh) != df_export_blk (old));
  g_assert_cmpint (first_byte (fresh, 0), ==, 'B');
  /* the new generation took over: the old session is fenced */
  g_assert_nonnull (strstr (df_export_fence_reason (old),
                            "started boot generation"));
  g_assert_cmpint (df_blk_pread (df_export_blk (old), buf, sizeof buf, 0,
                                 &errnum), ==, -1);
  g_assert_cmpint (errnum, ==, ESHUTDOWN);
  {
    g_autofree char *want
        = g_strdup_printf (" gen %" G_GINT64_FORMAT ",", gen);
    g_assert_nonnull (strstr (df_export_description (fresh), want));
  }
  df_export_close (old);
  df_export_close (fresh);
}

static void
test_version_change_same_generation (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfExport *e = open_ok (f, "device/pc01");
  gint64 gen;

  df_export_close (e);
  /* v2 promoted: running targets keep v1 until their next boot */
  g_assert_true (df_farm_version_set_state (f->farm, "web", 2,
                                            DF_VSTATE_PRODUCTION, &err));
  g_assert_no_error (err);
  e = open_ok (f, "device/pc01");
  g_assert_cmpint (first_byte (e, 0), ==, 'B');
  g_assert_nonnull (strstr (df_export_description (e), "vdisk web v1"));
  df_export_close (e);
  e = open_ok (f, "vdisk/web"); /* the vdisk export follows at once */
  g_assert_cmpint (first_byte (e, 0), ==, 'C');
  df_export_close (e);
  g_assert_true (df_farm_device_new_generation (f->farm, "pc01", &gen, &err));
  e = open_ok (f, "device/pc01");
  g_assert_cmpint (first_byte (e, 0), ==, 'C');
  g_assert_nonnull (strstr (df_export_description (e), "vdisk web v2"));
  df_export_close (e);
}

/* Cache mode private: the first open pins the version (private.base), the
 * layer survives a new generation and a new registry (a restart), and a
 * promotion never moves it; a pin over another vdisk refuses the open. */
static void
test_private (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_auto (DfCachePin) pin = { 0 };
  g_autofree char *dir = NULL;
  DfExport *e;
  gint64 gen;
  int errnum = 0;

  add_device (f, "pc06", "52:54:00:00:00:06", "production", "private", 0);
  dir = df_farm_cache_dir (f->farm, "pc06");
  e = open_ok (f, "device/pc06");
  g_assert_false (df_export_readonly (e));
  g_assert_nonnull (strstr (df_export_description (e),
                            "cache private gen"));
  g_assert_nonnull (strstr (df_export_description (e), "vdisk web v1"));
  g_assert_true (df_cache_pin_read (dir, &pin, &err));
  g_assert_cmpstr (pin.vdisk, ==, "web");
  g_assert_cmpint (pin.version, ==, 1);
  {
    g_autoptr (DfVersion) v1 = df_farm_version_get (f->farm, "web", 1, &err);
    g_assert_cmpstr (pin.sha256, ==, v1->sha256); /* the file's identity */
  }
  write_fill (e, CLUSTER, 'P', 8192);
  g_assert_cmpint (df_blk_flush (df_export_blk (e), &errnum), ==, 0);
  df_export_close (e);

  /* v2 promoted + a new generation: pc01 moves, pc06 does not. */
  g_assert_true (df_farm_version_set_state (f->farm, "web", 2,
                                            DF_VSTATE_PRODUCTION, &err));
  g_assert_true (df_farm_device_new_generation (f->farm, "pc06", &gen, &err));
  g_assert_no_error (err);
  e = open_ok (f, "device/pc01");
  g_assert_cmpint (first_byte (e, 0), ==, 'C');
  df_export_close (e);
  e = open_ok (f, "device/pc06");
  g_assert_cmpint (first_byte (e, 0), ==, 'B');
  g_assert_cmpint (first_byte (e, CLUSTER), ==, 'P');
  g_assert_nonnull (strstr (df_export_description (e), "vdisk web v1"));
  df_export_close (e);

  /* A new registry (streamsvc restart) finds the same layer. */
  df_exports_free (f->ex);
  f->ex = df_exports_new (f->dir, test_db_for (f->dir), &err);
  g_assert_no_error (err);
  e = open_ok (f, "device/pc06");
  g_assert_cmpint (first_byte (e, CLUSTER), ==, 'P');
  g_assert_cmpint (first_byte (e, 0), ==, 'B');
  df_export_close (e);

  /* A vdisk rename keeps it (found by the file's SHA-256). */
  df_exports_free (f->ex);
  g_assert_true (df_farm_vdisk_rename (f->farm, "web", "webr", &err));
  g_assert_no_error (err);
  f->ex = df_exports_new (f->dir, test_db_for (f->dir), &err);
  e = open_ok (f, "device/pc06");
  g_assert_cmpint (first_byte (e, CLUSTER), ==, 'P');
  g_assert_nonnull (strstr (df_export_description (e), "vdisk webr v1"));
  df_export_close (e);

  /* A pin over a version the farm does not have: refused, not served. */
  df_exports_free (f->ex);
  g_assert_true (df_cache_discard_dir (dir, &err));
  g_assert_true (df_cache_pin_write (
      dir, &(DfCachePin) { .vdisk = "other", .version = 0 }, &err));
  g_assert_no_error (err);
  f->ex = df_exports_new (f->dir, test_db_for (f->dir), &err);
  g_assert_no_error (err);
  open_fails (f, "device/pc06", DF_ERROR_NOT_FOUND,
              "(vdisk other v0) is gone");
}

static void
test_persistent (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfExport *a = open_ok (f, "device/pc03");
  DfExport *b = open_ok (f, "device/52:54:00:00:00:03");
  DfExport *fresh;
  gint64 gen;
  int errnum = 0;

  g_assert_true (df_export_blk (a) == df_export_blk (b));
  write_fill (a, CLUSTER, 'P', 8192);
  g_assert_cmpint (df_blk_flush (df_export_blk (a), &errnum), ==, 0);
  write_fill (b, 3 * CLUSTER, 'Q', 4096); /* not flushed by the session */
  g_assert_true (df_farm_device_new_generation (f->farm, "pc03", &gen, &err));
  /* never two caches over the same persistent files: the new generation
   * takes over, the old sessions are fenced and drained first (their
   * cache flushed and released, so the new open gets its lock) */
  fresh = open_ok (f, "device/pc03");
  g_assert_nonnull (df_export_fence_reason (a));
  g_assert_nonnull (df_export_fence_reason (b));
  g_assert_null (df_export_fence_reason (fresh));
  g_assert_cmpint (df_blk_flush (df_export_blk (b), &errnum), ==, -1);
  g_assert_cmpint (errnum, ==, ESHUTDOWN);
  g_assert_cmpint (first_byte (fresh, CLUSTER), ==, 'P'); /* it persisted */
  g_assert_cmpint (first_byte (fresh, 3 * CLUSTER), ==, 'Q');
  g_assert_cmpint (first_byte (fresh, 0), ==, 'B');
  df_export_close (a);
  df_export_close (b);
  df_export_close (fresh);
  a = open_ok (f, "device/pc03");
  g_assert_cmpint (first_byte (a, CLUSTER), ==, 'P');
  df_export_close (a);
}

/* Change one device row field through the console-side handle. */
static void
device_set (Fixture *f, const char *name, const char *field,
            const char *value)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfDevice) d = df_farm_device_get (f->farm, name, &err);

  g_assert_no_error (err);
  if (strcmp (field, "cache") == 0)
    {
      g_free (d->cache_mode);
      d->cache_mode = g_strdup (value);
    }
  else if (strcmp (field, "type") == 0)
    {
      g_free (d->type);
      d->type = g_strdup (value);
    }
  else if (strcmp (field, "vdisk") == 0)
    {
      g_free (d->vdisk);
      d->vdisk = g_strdup (value);
    }
  else
    g_assert_not_reached ();
  g_assert_true (df_farm_device_update (f->farm, d, &err));
  g_assert_no_error (err);
}

static void
assert_fenced (DfExport *e, const char *needle)
{
  char buf[512];
  int errnum = 0;

  g_assert_nonnull (df_export_fence_reason (e));
  if (strstr (df_export_fence_reason (e), needle) == NULL)
    g_error ("fence reason '%s' lacks '%s'", df_export_fence_reason (e),
             needle);
  g_assert_cmpint (df_blk_pread (df_export_blk (e), buf, sizeof buf, 0,
                                 &errnum), ==, -1);
  g_assert_cmpint (errnum, ==, ESHUTDOWN);
}

/* The periodic check fences a live session whose binding the farm left,
 * without any new open; a promotion does not (pinned per generation). */
static void
test_binding_check (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfExport *a = open_ok (f, "device/pc01");
  DfExport *t = open_ok (f, "device/pc02");
  DfExport *v = open_ok (f, "vdisk/web@2");
  DfExportBinding b;
  DfExport *fresh;

  df_export_binding (a, &b);
  g_assert_cmpstr (b.device, ==, "pc01");
  g_assert_cmpint (b.generation, ==, 1);
  g_assert_cmpstr (b.vdisk, ==, "web");
  g_assert_cmpint (b.version, ==, 1);
  g_assert_cmpstr (b.cache, ==, "server");
  g_assert_false (b.maintenance);
  df_export_binding (v, &b);
  g_assert_null (b.device);
  g_assert_cmpint (b.generation, ==, -1);
  g_assert_cmpint (b.version, ==, 2);
  g_assert_null (b.cache);
  g_assert_true (df_farm_version_set_state (f->farm, "web", 2,
                                            DF_VSTATE_PRODUCTION, &err));
  df_exports_check (f->ex);
  g_assert_null (df_export_fence_reason (a)); /* keeps v1 until reboot */
  g_assert_cmpint (first_byte (a, 0), ==, 'B');
  device_set (f, "pc01", "cache", "ram:64");
  write_fill (a, 0, 'X', 4096); /* acknowledged: the check has not run */
  df_exports_check (f->ex);
  assert_fenced (a, "write cache is now ram:64 (was server)");
  g_assert_null (df_export_fence_reason (t));
  g_assert_null (df_export_fence_reason (v));
  fresh = open_ok (f, "device/pc01");
  g_assert_null (df_export_fence_reason (fresh));
  g_assert_nonnull (strstr (df_export_description (fresh), "cache ram:64"));
  g_assert_cmpint (first_byte (fresh, 0), ==, 'C'); /* a new boot's view */
  df_export_close (fresh);
  device_set (f, "pc02", "type", "production");
  df_exports_check (f->ex);
  assert_fenced (t, "is now of type production (was test)");
  df_export_close (t);
  t = open_ok (f, "device/pc02");
  g_assert_true (df_farm_device_remove (f->farm, "pc02", &err));
  g_assert_no_error (err);
  df_exports_check (f->ex);
  assert_fenced (t, "pc02");
  open_fails (f, "device/pc02", DF_ERROR_NOT_FOUND, "pc02");
  df_export_close (t);
  t = open_ok (f, "device/pc04");
  make_version (f, "db", 0, 'D', DF_VSTATE_PRODUCTION);
  device_set (f, "pc04", "vdisk", "db");
  df_exports_check (f->ex);
  assert_fenced (t, "now uses vdisk db (was web)");
  df_export_close (t);
  t = open_ok (f, "device/pc04");
  g_assert_cmpint (first_byte (t, 0), ==, 'D');
  df_export_close (t);
  df_export_close (a);
  df_export_close (v);
}

/* The background checker needs no call: a reset reaches a live session
 * within about a second. */
static void
test_binding_checker_thread (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfExport *a = open_ok (f, "device/pc01");
  gint64 gen, deadline;

  g_assert_true (df_farm_device_new_generation (f->farm, "pc01", &gen, &err));
  deadline = g_get_monotonic_time () + 3 * G_USEC_PER_SEC;
  while (df_export_fence_reason (a) == NULL
         && g_get_monotonic_time () < deadline)
    g_usleep (20 * 1000);
  assert_fenced (a, "started boot generation 2");
  df_export_close (a);
}

/* A FLUSH after the farm moved on is refused, not acknowledged, even
 * before any periodic check ran. */
static void
test_binding_flush (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfExport *a = open_ok (f, "device/pc01");
  int errnum = 0;
  gint64 gen;

  write_fill (a, 0, 'X', 4096);
  g_assert_cmpint (df_blk_flush (df_export_blk (a), &errnum), ==, 0);
  g_assert_true (df_farm_device_new_generation (f->farm, "pc01", &gen, &err));
  g_assert_cmpint (df_blk_flush (df_export_blk (a), &errnum), ==, -1);
  g_assert_cmpint (errnum, ==, ESHUTDOWN);
  assert_fenced (a, "started boot generation 2");
  df_export_close (a);
}

/* A maintenance device opened before `version new` (bound to the old
 * version's own cache) gets the new maintenance version's cache at its
 * next open; the old session is fenced. */
static void
test_maintenance_version_new (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *maint = NULL;
  DfExport *old, *e;
  DfExportBinding b;

  add_device (f, "m1", "52:54:00:00:00:11", "maintenance", "server", 0);
  old = open_ok (f, "device/m1");
  df_export_binding (old, &b);
  g_assert_cmpint (b.version, ==, 2); /* newest published */
  g_assert_false (b.maintenance);
  g_assert_true (df_farm_version_add (f->farm, "web", 3, 2, "web.3.qcow2",
                                      NULL, DISK_SIZE, 0,
                                      DF_VSTATE_MAINTENANCE, &err));
  g_assert_no_error (err);
  e = open_ok (f, "device/m1");
  /* The new maintenance version also starts m1's next boot generation, in
   * the same farm transaction (lib/farm), which the fence names first. */
  assert_fenced (old, "started boot generation 2");
  df_export_binding (e, &b);
  g_assert_cmpint (b.generation, ==, 2);
  g_assert_cmpint (b.version, ==, 3);
  g_assert_true (b.maintenance);
  g_assert_cmpstr (b.cache, ==, "server-persistent");
  write_fill (e, 0, 'M', 4096);
  df_export_close (e);
  df_export_close (old);
  maint = g_build_filename (f->dir, "store", "web", "web.3.maint", NULL);
  g_assert_true (g_file_test (maint, G_FILE_TEST_IS_DIR));
  e = open_ok (f, "device/m1"); /* the same maintenance cache again */
  g_assert_cmpint (first_byte (e, 0), ==, 'M');
  df_export_close (e);
}

static void
test_list (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_auto (GStrv) names = NULL;

  make_version (f, "db", 0, 'D', DF_VSTATE_PRODUCTION);
  names = df_exports_list (f->ex, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (g_strv_length (names), ==, 2);
  g_assert_true (g_strv_contains ((const char *const *)names, "vdisk/web"));
  g_assert_true (g_strv_contains ((const char *const *)names, "vdisk/db"));
}

typedef struct
{
  char *device;
  char *mode;
  DfCacheStats st;
} Visit;

static void
visit (void *opaque, const char *device, const char *mode,
       const DfCacheStats *st)
{
  GArray *seen = opaque;
  Visit v = { g_strdup (device), g_strdup (mode), *st };

  g_array_append_val (seen, v);
}

static const Visit *
find_visit (GArray *seen, const char *device)
{
  for (guint i = 0; i < seen->len; i++)
    if (strcmp (g_array_index (seen, Visit, i).device, device) == 0)
      return &g_array_index (seen, Visit, i);
  return NULL;
}

static void
visit_clear (gpointer p)
{
  Visit *v = p;

  g_free (v->device);
  g_free (v->mode);
}

/* Cache mode hypervisor: the device export is the chain of the version
 * the generation pinned, read-only, with no cache on the server. */
static void
test_hypervisor (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (GArray) seen = g_array_new (FALSE, TRUE, sizeof (Visit));
  g_autofree char *cache_dir = NULL;
  DfExport *e, *by_mac, *v1;
  gint64 gen;

  add_device (f, "pc05", "52:54:00:00:00:05", "production", "hypervisor", 0);
  cache_dir = df_farm_cache_dir (f->farm, "pc05");
  e = open_ok (f, "device/pc05");
  by_mac = open_ok (f, "device/52:54:00:00:00:05");
  v1 = open_ok (f, "vdisk/web@1");
  g_assert_true (df_export_readonly (e));
  g_assert_true (df_export_blk (e)->readonly);
  g_assert_cmpstr (df_export_device (e), ==, "pc05");
  g_assert_nonnull (strstr (df_export_description (e),
                            "cache hypervisor (read-only)"));
  g_assert_nonnull (strstr (df_export_description (e), "vdisk web v1"));
  /* the version's own chain, shared with the vdisk export */
  g_assert_true (df_fence_blk_inner (df_export_blk (e)) == df_export_blk (v1));
  g_assert_true (df_export_blk (e) == df_export_blk (by_mac));
  g_assert_cmpint (first_byte (e, 0), ==, 'B');
  g_assert_false (g_file_test (cache_dir, G_FILE_TEST_EXISTS));
  g_array_set_clear_func (seen, visit_clear);
  df_exports_foreach_cache (f->ex, visit, seen);
  g_assert_null (find_visit (seen, "pc05"));
  df_exports_flush_all (f->ex);
  df_export_close (by_mac);
  df_export_close (v1);

  /* a promotion is seen at the next generation only */
  g_assert_true (df_farm_version_set_state (f->farm, "web", 2,
                                            DF_VSTATE_PRODUCTION, &err));
  g_assert_no_error (err);
  df_export_close (e);
  e = open_ok (f, "device/pc05");
  g_assert_cmpint (first_byte (e, 0), ==, 'B');
  df_export_close (e);
  g_assert_true (df_farm_device_new_generation (f->farm, "pc05", &gen, &err));
  g_assert_no_error (err);
  e = open_ok (f, "device/pc05");
  g_assert_cmpint (first_byte (e, 0), ==, 'C');
  g_assert_nonnull (strstr (df_export_description (e), "vdisk web v2"));
  g_assert_true (df_export_readonly (e));
  df_export_close (e);
  g_assert_false (g_file_test (cache_dir, G_FILE_TEST_EXISTS));
}

static void
test_foreach_cache_and_quota (Fixture *f, gconstpointer data)
{
  g_autoptr (GArray) seen = g_array_new (FALSE, TRUE, sizeof (Visit));
  DfExport *a = open_ok (f, "device/pc01");
  DfExport *b = open_ok (f, "device/pc02");
  DfExport *q = open_ok (f, "device/pc04");
  g_autofree char *big = g_malloc0 (128 * 1024);
  const Visit *v;
  int errnum = 0;

  g_array_set_clear_func (seen, visit_clear);
  memset (big, 'Q', 128 * 1024);
  write_fill (a, 0, 'X', 8192);
  /* past the 64 KiB quota: ENOSPC, not corruption (the cache logs a
   * warning, which g_test makes fatal: not here) */
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
  g_assert_cmpint (
      df_blk_pwrite (df_export_blk (q), big, 128 * 1024, 0, 0, &errnum), ==,
      -1);
  g_assert_cmpint (errnum, ==, ENOSPC);
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL
                          | G_LOG_LEVEL_WARNING);
  df_exports_foreach_cache (f->ex, visit, seen);
  g_assert_cmpuint (seen->len, ==, 3);
  v = find_visit (seen, "pc01");
  g_assert_nonnull (v);
  g_assert_cmpstr (v->mode, ==, "server");
  g_assert_cmpuint (v->st.cached_bytes, >=, 8192);
  v = find_visit (seen, "pc02");
  g_assert_cmpstr (v->mode, ==, "ram:16");
  v = find_visit (seen, "pc04");
  g_assert_cmpuint (v->st.quota_bytes, ==, 64 * 1024);
  g_assert_cmpuint (v->st.quota_hits, >=, 1);
  df_exports_flush_all (f->ex);
  df_export_close (a);
  df_export_close (b);
  df_export_close (q);
}

/* Opening is on every NBD connection: 1000 must be quick. */
static void
test_many_opens (Fixture *f, gconstpointer data)
{
  gint64 t0 = g_get_monotonic_time ();
  double secs;

  for (guint i = 0; i < 1000; i++)
    {
      DfExport *e = open_ok (f, i % 2 ? "device/pc01" : "vdisk/web@0");

      df_export_close (e);
    }
  secs = (g_get_monotonic_time () - t0) / 1e6;
  g_test_message ("1000 opens in %.3f s", secs);
  g_assert_cmpfloat (secs, <, 5.0);
}

typedef struct
{
  Fixture *f;
  df_blk *expect;
} OpenThread;

static gpointer
open_thread (gpointer data)
{
  OpenThread *t = data;

  for (guint i = 0; i < 200; i++)
    {
      DfExport *e = open_ok (t->f, "device/pc03");

      g_assert_true (df_export_blk (e) == t->expect);
      df_export_close (e);
    }
  return NULL;
}

static void
test_concurrent_opens (Fixture *f, gconstpointer data)
{
  DfExport *keep = open_ok (f, "device/pc03");
  OpenThread t = { f, df_export_blk (keep) };
  GThread *th[4];

  for (guint i = 0; i < G_N_ELEMENTS (th); i++)
    th[i] = g_thread_new ("open", open_thread, &t);
  for (guint i = 0; i < G_N_ELEMENTS (th); i++)
    g_thread_join (th[i]);
  df_export_close (keep);
}

/* ---- admin HTTP ------------------------------------------------------- */

#define ADMIN_TOKEN "0123456789abcdef-unit"

typedef struct
{
  DfSessions *sessions;
  DfExports *ex;
  GMainContext *ctx;
  GMainLoop *loop;
  GMutex lock;
  GCond cond;
  const char *unix_path; /* listen there instead of 127.0.0.1:0 */
  gint started;          /* 0 until started, 1 ok, -1 failed */
  guint16 port;
} AdminThread;

static gpointer
admin_thread (gpointer data)
{
  AdminThread *t = data;
  g_autoptr (GError) err = NULL;
  DfListenAddr addr = { .host = (char *)"127.0.0.1", .port = 0 };
  DfAdmin *a;

  if (t->unix_path != NULL)
    addr = (DfListenAddr){ .unix_path = (char *)t->unix_path };
  g_main_context_push_thread_default (t->ctx);
  DfAdminAccess access = { .token = ADMIN_TOKEN, .socket_owner = (uid_t)-1,
                           .socket_group = (gid_t)-1 };

  a = df_admin_start (&addr, 1, &access, t->sessions, t->ex, t->ctx, &err);
  g_assert_no_error (err);
  g_mutex_lock (&t->lock);
  t->port = a ? df_admin_port (a) : 0;
  t->started = a ? 1 : -1;
  g_cond_signal (&t->cond);
  g_mutex_unlock (&t->lock);
  if (a != NULL)
    g_main_loop_run (t->loop);
  df_admin_stop (a);
  while (g_main_context_iteration (t->ctx, FALSE))
    ; /* let closed connections finish */
  g_main_context_pop_thread_default (t->ctx);
  return NULL;
}

/* Run t's admin server on a new thread (admin_thread_stop) and wait until
 * it listens. */
static GThread *
admin_thread_start (AdminThread *t)
{
  GThread *th;

  t->ctx = g_main_context_new ();
  t->loop = g_main_loop_new (t->ctx, FALSE);
  g_mutex_init (&t->lock);
  g_cond_init (&t->cond);
  th = g_thread_new ("admin", admin_thread, t);
  g_mutex_lock (&t->lock);
  while (t->started == 0)
    g_cond_wait (&t->cond, &t->lock);
  g_mutex_unlock (&t->lock);
  g_assert_cmpint (t->started, ==, 1);
  return th;
}

/* Quit t's loop, join its thread th, free the loop and the context. */
static void
admin_thread_stop (AdminThread *t, GThread *th)
{
  g_main_loop_quit (t->loop);
  g_thread_join (th);
  g_main_loop_unref (t->loop);
  g_main_context_unref (t->ctx);
}

/* GET/POST url with "Authorization: <auth>" (NULL: none); returns the
 * body, *status and *ctype (new string). */
static GBytes *
http_auth (SoupSession *session, const char *method, guint16 port,
           const char *path, const char *auth, guint *status, char **ctype)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *url = g_strdup_printf ("http://127.0.0.1:%u%s", port, path);
  g_autoptr (SoupMessage) msg = soup_message_new (method, url);
  GBytes *body;

  if (auth != NULL)
    soup_message_headers_replace (soup_message_get_request_headers (msg),
                                  "Authorization", auth);
  body = soup_session_send_and_read (session, msg, NULL, &err);

  g_assert_no_error (err);
  *status = soup_message_get_status (msg);
  *ctype = g_strdup (soup_message_headers_get_content_type (
      soup_message_get_response_headers (msg), NULL));
  return body;
}

/* The same with the right token. */
static GBytes *
http (SoupSession *session, const char *method, guint16 port, const char *path,
      guint *status, char **ctype)
{
  return http_auth (session, method, port, path, "Bearer " ADMIN_TOKEN,
                    status, ctype);
}

static JsonNode *
parse_json (GBytes *body)
{
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) err = NULL;
  gsize len;
  const char *data = g_bytes_get_data (body, &len);

  g_assert_true (json_parser_load_from_data (p, data, len, &err));
  g_assert_no_error (err);
  return json_node_copy (json_parser_get_root (p));
}

static void
check_health (SoupSession *c, guint16 port)
{
  guint status;
  g_autofree char *ctype = NULL;
  g_autoptr (GBytes) body
      = http (c, "GET", port, "/v1/health", &status, &ctype);
  g_autoptr (JsonNode) root = parse_json (body);
  JsonObject *o = json_node_get_object (root);

  g_assert_cmpuint (status, ==, 200);
  g_assert_cmpstr (ctype, ==, "application/json");
  g_assert_cmpstr (json_object_get_string_member (o, "status"), ==, "ok");
  g_assert_cmpint (json_object_get_int_member (o, "sessions"), ==, 2);
  g_assert_nonnull (json_object_get_string_member (o, "version"));
}

static void
check_sessions (SoupSession *c, guint16 port)
{
  guint status;
  g_autofree char *ctype = NULL;
  g_autoptr (GBytes) body
      = http (c, "GET", port, "/v1/sessions", &status, &ctype);
  g_autoptr (JsonNode) root = parse_json (body);
  JsonArray *arr = json_node_get_array (root);
  JsonObject *dev, *vd;

  g_assert_cmpuint (status, ==, 200);
  g_assert_cmpstr (ctype, ==, "application/json");
  g_assert_cmpuint (json_array_get_length (arr), ==, 2);
  dev = json_array_get_object_element (arr, 0);
  vd = json_array_get_object_element (arr, 1);
  g_assert_cmpstr (json_object_get_string_member (dev, "device"), ==, "pc01");
  g_assert_cmpstr (json_object_get_string_member (dev, "export"), ==,
                   "device/pc01");
  g_assert_cmpstr (json_object_get_string_member (dev, "client"), ==,
                   "127.0.0.1:5555");
  g_assert_cmpint (json_object_get_int_member (dev, "bytes_written"), ==,
                   8192);
  g_assert_cmpint (json_object_get_int_member (dev, "cache_bytes"), >=, 8192);
  g_assert_true (json_object_get_null_member (vd, "cache_bytes"));
  g_assert_cmpstr (json_object_get_string_member (vd, "proto"), ==, "nbd");
}

static void
check_metrics (SoupSession *c, guint16 port)
{
  guint status;
  g_autofree char *ctype = NULL;
  g_autoptr (GBytes) body = http (c, "GET", port, "/metrics", &status, &ctype);
  g_autofree char *text
      = g_strndup (g_bytes_get_data (body, NULL), g_bytes_get_size (body));

  g_assert_cmpuint (status, ==, 200);
  g_assert_cmpstr (ctype, ==, "text/plain");
  g_assert_nonnull (strstr (text, "# TYPE diskfarm_cache_bytes gauge\n"));
  g_assert_nonnull (strstr (text, "diskfarm_cache_bytes{device=\"pc01\","
                                  "mode=\"server\"} "));
  g_assert_nonnull (strstr (text, "diskfarm_cache_quota_bytes{device="
                                  "\"pc01\"} 0\n"));
  g_assert_nonnull (strstr (text, "diskfarm_ops_total{export=\"device/pc01\""
                                  ",op=\"write\"} 2\n"));
  g_assert_nonnull (strstr (text, "diskfarm_request_duration_seconds_count{"
                                  "export=\"vdisk/web\"} 1\n"));
  g_assert_nonnull (strstr (text, "diskfarm_sessions 2\n"));
}

static void
check_errors (SoupSession *c, guint16 port)
{
  guint status;
  g_autofree char *ct1 = NULL, *ct2 = NULL;
  g_bytes_unref (http (c, "GET", port, "/v1/nothing", &status, &ct1));

  g_assert_cmpuint (status, ==, 404);
  g_bytes_unref (http (c, "POST", port, "/metrics", &status, &ct2));
  g_assert_cmpuint (status, ==, 405);
}

/* TCP: the token is needed for everything but /metrics and /v1/health,
 * on every path, known or not (admin_auth.h). */
static void
check_auth (SoupSession *c, guint16 port)
{
  static const struct
  {
    const char *method, *path, *auth;
    guint status;
  } cases[] = {
    { "GET", "/v1/sessions", NULL, 401 },
    { "GET", "/v1/sessions", "Bearer wrong", 401 },
    { "GET", "/v1/sessions", "Bearer " ADMIN_TOKEN "x", 401 },
    { "GET", "/v1/sessions", "Basic " ADMIN_TOKEN, 401 },
    { "GET", "/v1/sessions", "bearer " ADMIN_TOKEN, 200 },
    { "GET", "/v1/nothing", NULL, 401 },
    { "POST", "/v1/sessions", NULL, 401 },
    { "GET", "/metrics", NULL, 200 },
    { "GET", "/v1/health", NULL, 200 },
    { "GET", "/v1/health", "Bearer wrong", 200 },
  };

  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      guint status;
      g_autofree char *ctype = NULL;
      g_autoptr (GBytes) b = http_auth (c, cases[i].method, port,
                                        cases[i].path, cases[i].auth,
                                        &status, &ctype);

      g_test_message ("%s %s %s", cases[i].method, cases[i].path,
                      cases[i].auth ? cases[i].auth : "(none)");
      g_assert_cmpuint (status, ==, cases[i].status);
    }
}

static void
test_admin (Fixture *f, gconstpointer data)
{
  DfSessions *sessions = df_sessions_new ();
  DfSession *s1 = df_session_start (sessions, "nbd", "127.0.0.1:5555");
  DfSession *s2 = df_session_start (sessions, "nbd", "unix");
  DfExport *e = open_ok (f, "device/pc01");
  AdminThread t = { .sessions = sessions, .ex = f->ex };
  g_autoptr (SoupSession) client = soup_session_new ();
  GThread *th;

  df_session_set_export (s1, "device/pc01", "pc01");
  df_session_set_export (s2, "vdisk/web", NULL);
  write_fill (e, 0, 'X', 4096);
  write_fill (e, 8192, 'Y', 4096);
  df_session_account (s1, DF_OP_WRITE, 4096, 30000, false);
  df_session_account (s1, DF_OP_WRITE, 4096, 30000, false);
  df_session_account (s2, DF_OP_READ, 512, 30000, false);

  th = admin_thread_start (&t);
  g_assert_cmpuint (t.port, !=, 0);

  check_health (client, t.port);
  check_sessions (client, t.port);
  check_metrics (client, t.port);
  check_errors (client, t.port);
  check_auth (client, t.port);

  soup_session_abort (client);
  g_usleep (100000); /* the server sees the clients go */
  admin_thread_stop (&t, th);
  df_session_end (s1);
  df_session_end (s2);
  df_sessions_free (sessions);
  df_export_close (e);
}

/* unix:PATH listener, reached through a SoupSession whose remote
 * connectable is the socket. */
static void
test_admin_unix (Fixture *f, gconstpointer data)
{
  g_autofree char *path = g_build_filename (f->dir, "admin.sock", NULL);
  g_autoptr (GSocketAddress) sa = g_unix_socket_address_new (path);
  DfSessions *sessions = df_sessions_new ();
  AdminThread t = { .sessions = sessions, .ex = f->ex, .unix_path = path };
  g_autoptr (SoupSession) client
      = soup_session_new_with_options ("remote-connectable", sa, NULL);
  g_autofree char *ctype = NULL;
  g_autoptr (GBytes) body = NULL;
  g_autoptr (JsonNode) root = NULL;
  GThread *th;
  guint status;

  th = admin_thread_start (&t);
  g_assert_cmpuint (t.port, ==, 0);
  body = http (client, "GET", 80, "/v1/health", &status, &ctype);
  g_assert_cmpuint (status, ==, 200);
  root = parse_json (body);
  g_assert_cmpint (
      json_object_get_int_member (json_node_get_object (root), "sessions"), ==,
      0);
  /* the socket's mode is the access rule: no token asked */
  g_clear_pointer (&body, g_bytes_unref);
  g_clear_pointer (&ctype, g_free);
  body = http_auth (client, "GET", 80, "/v1/sessions", NULL, &status, &ctype);
  g_assert_cmpuint (status, ==, 200);
  g_assert_cmpuint (g_file_test (path, G_FILE_TEST_EXISTS), ==, TRUE);
  {
    struct stat st;
    g_assert_cmpint (stat (path, &st), ==, 0);
    g_assert_cmpint (st.st_mode & 07777, ==, DF_ADMIN_SOCKET_MODE);
  }
  soup_session_abort (client);
  admin_thread_stop (&t, th);
  g_assert_false (g_file_test (path, G_FILE_TEST_EXISTS)); /* unlinked */
  df_sessions_free (sessions);
}

/* ---- NBD TLS: the identity rule, farm keys, the engine's STARTTLS ------ */

static void
test_tls_authorize (Fixture *f, gconstpointer data)
{
  static const struct {
    const char *identity, *name;
    bool ok;
  } cases[] = {
    { "pc01", "device/pc01", true },
    { "PC01", "device/pc01", true },          /* device names: any case */
    { "pc01", "device/52:54:00:00:00:01", true },
    { "pc01", "device/52-54-00-00-00-01", true },
    { "pc01", "vdisk/web", true },
    { "pc01", "vdisk/web@0", true },
    { "pc01", "vdisk/nosuch", true },         /* open says UNKNOWN */
    { NULL, "vdisk/web", true },
    { "pc01", "device/pc02", false },
    { "pc01", "device/52:54:00:00:00:02", false },
    { "pc01", "device/nosuch", false },
    { "pc01", "device/52:54:00:99:99:99", false },
    { "pc01", "nosuch", false },
    { "pc01", "", false },
    { "nosuch", "device/52:54:00:00:00:01", false },
    { "nosuch", "device/nosuch", true },      /* its own name: open says
                                               * UNKNOWN to it alone */
    { NULL, "device/pc01", false },
    { NULL, "device/52:54:00:00:00:01", false },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) err = NULL;
      bool ok = df_exports_authorize (f->ex, cases[i].name,
                                      cases[i].identity, &err);

      g_test_message ("%s opens %s: %d", cases[i].identity, cases[i].name,
                      ok);
      g_assert_cmpint (ok, ==, cases[i].ok);
      if (ok)
        g_assert_no_error (err);
      else
        {
          g_autofree char *want = g_strdup_printf (
              "export '%s' is not open to TLS identity '%s'", cases[i].name,
              cases[i].identity ? cases[i].identity : "(none)");
          g_assert_error (err, DF_ERROR, DF_ERROR_DENIED);
          g_assert_cmpstr (err->message, ==, want);
        }
    }
}

static void
test_nbd_psk (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfSecret) hex = NULL;
  g_autoptr (DfSecret) hex2 = NULL;
  g_autoptr (DfSecret) hex3 = NULL;
  uint8_t key[DF_NBD_PSK_BYTES * 2];
  size_t len = 0;
  char back[2 * DF_NBD_PSK_BYTES + 1];
  g_autoptr (GPtrArray) audit = NULL;
  DfAudit *last;

  g_assert_false (df_exports_nbd_psk (f->ex, "pc02", key, &len));
  g_assert_true (df_farm_nbd_psk_generate (f->farm, "PC02", &hex, &err));
  g_assert_no_error (err);
  g_assert_cmpuint (strlen (hex), ==, 2 * DF_NBD_PSK_BYTES);
  g_assert_true (df_exports_nbd_psk (f->ex, "pc02", key, &len));
  g_assert_cmpuint (len, ==, DF_NBD_PSK_BYTES);
  for (size_t i = 0; i < len; i++)
    g_snprintf (back + 2 * i, 3, "%02x", key[i]);
  g_assert_cmpstr (back, ==, hex);
  /* a new key replaces it; the audit row never holds one */
  g_assert_true (df_farm_nbd_psk_generate (f->farm, "pc02", &hex2, &err));
  g_assert_cmpstr (hex, !=, hex2);
  audit = df_farm_audit_list (f->farm, 1, &err);
  g_assert_no_error (err);
  last = audit->pdata[0];
  g_assert_cmpstr (last->action, ==, "device.nbd-psk");
  g_assert_null (strstr (last->detail, hex2));
  /* others: none, unknown, not a name */
  g_assert_false (df_exports_nbd_psk (f->ex, "pc01", key, &len));
  g_assert_false (df_exports_nbd_psk (f->ex, "nosuch", key, &len));
  g_assert_false (df_exports_nbd_psk (f->ex, "../x", key, &len));
  g_assert_false (df_farm_nbd_psk_generate (f->farm, "nosuch", &hex3, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_assert_null (hex3);
  g_clear_error (&err);
  g_assert_true (df_farm_nbd_psk_clear (f->farm, "pc02", &err));
  g_assert_false (df_exports_nbd_psk (f->ex, "pc02", key, &len));
}

static void
test_nbd_tls_setting (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfTlsMode mode = DF_TLS_ON;
  bool set = true;

  g_assert_true (df_exports_nbd_tls (f->ex, &mode, &set, &err));
  g_assert_false (set);
  g_assert_cmpint (mode, ==, DF_TLS_OFF);
  g_assert_true (df_farm_nbd_tls_set (f->farm, DF_TLS_REQUIRE, &err));
  g_assert_true (df_exports_nbd_tls (f->ex, &mode, &set, &err));
  g_assert_true (set);
  g_assert_cmpint (mode, ==, DF_TLS_REQUIRE);
  /* a value written behind the console's back is refused, not guessed */
  g_assert_true (df_farm_setting_set (f->farm, DF_SETTING_NBD_TLS, "yes",
                                      &err));
  g_assert_false (df_exports_nbd_tls (f->ex, &mode, &set, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
}

static void
put_info (GByteArray *b, uint32_t opt, const char *name)
{
  g_autoptr (GByteArray) d = g_byte_array_new ();

  tu_put_be32 (d, (uint32_t) strlen (name));
  g_byte_array_append (d, (const uint8_t *) name, (guint) strlen (name));
  g_byte_array_append (d, (const uint8_t *) "\0\0", 2);
  tu_put_opt (b, opt, d->data, d->len);
}

/* The reply types in out (after the 18-byte greeting when greeting), in
 * order; out is emptied. */
static GArray *
reply_types (GByteArray *out, bool greeting)
{
  GArray *types = g_array_new (FALSE, FALSE, sizeof (uint32_t));
  size_t at = greeting ? 18 : 0;

  while (at + 20 <= out->len)
    {
      uint32_t type = df_get_be32 (out->data + at + 12);
      g_array_append_val (types, type);
      at += 20 + df_get_be32 (out->data + at + 16);
    }
  g_assert_cmpuint (at, ==, out->len);
  g_byte_array_set_size (out, 0);
  return types;
}

#define REP_ACK 1u
#define REP_INFO 3u
#define ERR_POLICY 0x80000002u
#define ERR_INVALID 0x80000003u
#define ERR_TLS_REQD 0x80000005u

static void
assert_types (GByteArray *out, bool greeting, const uint32_t *want, guint n)
{
  g_autoptr (GArray) got = reply_types (out, greeting);

  g_assert_cmpuint (got->len, ==, n);
  for (guint i = 0; i < n; i++)
    g_assert_cmphex (g_array_index (got, uint32_t, i), ==, want[i]);
}

/* The engine alone (no socket, no OpenSSL): FORCEDTLS before STARTTLS,
 * nothing read while the transport runs the handshake, every byte and
 * option of before forgotten after it, the identity's rule after. */
static void
test_nbd_starttls_engine (Fixture *f, gconstpointer data)
{
  DfSessions *ss = df_sessions_new ();
  nbd_conn *c = nbd_conn_new (f->ex, ss, "test");
  DfEngineConn *e = nbd_conn_engine (c);
  g_autoptr (GByteArray) in = g_byte_array_new ();
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GByteArray) meta = g_byte_array_new ();
  static const uint32_t tls_reqd3[] = { ERR_TLS_REQD, ERR_TLS_REQD,
                                        ERR_TLS_REQD };
  static const uint32_t ack[] = { REP_ACK };
  static const uint32_t info_ok[] = { REP_INFO, REP_INFO, REP_ACK };
  static const uint32_t policy[] = { ERR_POLICY };
  static const uint32_t invalid[] = { ERR_INVALID };

  nbd_conn_set_tls (c, DF_TLS_REQUIRE);
  tu_put_be32 (in, 3);
  tu_put_opt (in, 8, NULL, 0);              /* STRUCTURED_REPLY */
  tu_put_opt (in, 3, NULL, 0);              /* LIST */
  put_info (in, 6, "vdisk/web");         /* INFO */
  g_assert_true (df_engine_feed (e, in->data, in->len, df_engine_sink_bytes,
                                 out));
  assert_types (out, true, tls_reqd3, 3);

  /* STARTTLS with plaintext behind it (an ABORT): ACK, then nothing */
  g_byte_array_set_size (in, 0);
  tu_put_opt (in, 5, NULL, 0);
  tu_put_opt (in, 2, NULL, 0);
  df_engine_feed (e, in->data, in->len, df_engine_sink_bytes, out);
  assert_types (out, false, ack, 1);
  g_assert_true (df_engine_tls_wanted (e));
  g_assert_cmpint (nbd_conn_state (c), ==, NBD_STATE_STARTTLS);
  g_assert_false (df_engine_has_work (e));
  g_assert_false (df_engine_should_close (e));

  /* the transport's handshake is done: the ABORT is gone */
  df_engine_tls_started (e, "pc01");
  g_assert_false (df_engine_tls_wanted (e));
  g_assert_cmpint (nbd_conn_state (c), ==, NBD_STATE_OPTIONS);
  g_byte_array_set_size (in, 0);
  tu_put_opt (in, 5, NULL, 0);               /* STARTTLS again: INVALID */
  g_assert_true (df_engine_feed (e, in->data, in->len, df_engine_sink_bytes,
                                 out));
  assert_types (out, false, invalid, 1);
  /* structured replies were plaintext-era: meta contexts are INVALID */
  g_byte_array_set_size (meta, 0);
  tu_put_be32 (meta, 9);
  g_byte_array_append (meta, (const uint8_t *) "vdisk/web", 9);
  tu_put_be32 (meta, 0);
  g_byte_array_set_size (in, 0);
  tu_put_opt (in, 10, meta->data, meta->len);
  df_engine_feed (e, in->data, in->len, df_engine_sink_bytes, out);
  assert_types (out, false, invalid, 1);

  g_byte_array_set_size (in, 0);
  put_info (in, 6, "device/pc01");
  df_engine_feed (e, in->data, in->len, df_engine_sink_bytes, out);
  assert_types (out, false, info_ok, 3);
  for (guint i = 0; i < 3; i++)
    {
      const char *other[] = { "device/pc02", "device/nosuch",
                              "device/52:54:00:00:00:02" };
      g_byte_array_set_size (in, 0);
      put_info (in, 7, other[i]);
      df_engine_feed (e, in->data, in->len, df_engine_sink_bytes, out);
      assert_types (out, false, policy, 1);
    }
  g_byte_array_set_size (in, 0);
  put_info (in, 6, "vdisk/web");
  df_engine_feed (e, in->data, in->len, df_engine_sink_bytes, out);
  assert_types (out, false, info_ok, 3);

  df_engine_free (e);
  df_sessions_free (ss);
}

/* Without TLS configured STARTTLS is POLICY and the engine never asks the
 * transport for TLS (a transport without it, such as --stdio). */
static void
test_nbd_starttls_off (Fixture *f, gconstpointer data)
{
  DfSessions *ss = df_sessions_new ();
  nbd_conn *c = nbd_conn_new (f->ex, ss, "test");
  DfEngineConn *e = nbd_conn_engine (c);
  g_autoptr (GByteArray) in = g_byte_array_new ();
  g_autoptr (GByteArray) out = g_byte_array_new ();
  static const uint32_t want[] = { ERR_POLICY, REP_INFO, REP_INFO, REP_ACK };

  tu_put_be32 (in, 3);
  tu_put_opt (in, 5, NULL, 0);
  put_info (in, 6, "device/pc02");
  df_engine_feed (e, in->data, in->len, df_engine_sink_bytes, out);
  assert_types (out, true, want, 4);
  g_assert_false (df_engine_tls_wanted (e));
  df_engine_free (e);
  df_sessions_free (ss);
}

/* ---- NBD: blocking work off the loop thread (engine.h DfEngineJob) ---- */

static void
put_request (GByteArray *b, uint16_t flags, uint16_t type, uint64_t cookie,
             uint64_t offset, uint32_t count)
{
  uint8_t p[28] = { 0x25, 0x60, 0x95, 0x13, flags >> 8, flags, type >> 8,
                    type };

  for (int i = 0; i < 8; i++)
    {
      p[8 + i] = (uint8_t) (cookie >> (56 - 8 * i));
      p[16 + i] = (uint8_t) (offset >> (56 - 8 * i));
    }
  for (int i = 0; i < 4; i++)
    p[24 + i] = (uint8_t) (count >> (24 - 8 * i));
  g_byte_array_append (b, p, sizeof p);
}

/* The cookies of the simple replies in out, in order (a READ's reply is
 * followed by read_len data bytes); out is emptied. */
static GArray *
reply_cookies (GByteArray *out, guint read_len, uint64_t read_cookie)
{
  GArray *cookies = g_array_new (FALSE, FALSE, sizeof (uint64_t));
  size_t at = 0;

  while (at + 16 <= out->len)
    {
      uint64_t cookie = 0;
      g_assert_cmphex (df_get_be32 (out->data + at), ==, 0x67446698);
      g_assert_cmpuint (df_get_be32 (out->data + at + 4), ==, 0);
      for (int i = 0; i < 8; i++)
        cookie = cookie << 8 | out->data[at + 8 + i];
      g_array_append_val (cookies, cookie);
      at += 16 + (cookie == read_cookie ? read_len : 0);
    }
  g_assert_cmpuint (at, ==, out->len);
  g_byte_array_set_size (out, 0);
  return cookies;
}

/* A transport's runner that keeps the job until the test runs it. */
static void
hold_job (void *opaque, DfEngineJob *job)
{
  DfEngineJob **held = opaque;

  g_assert_null (*held);
  *held = job;
}

static void
run_held_job (DfEngineJob **held)
{
  DfEngineJob *job = *held;

  *held = NULL;
  job->err = 0;
  job->ret = df_blk_flush (job->blk, &job->err);
  job->done (job);
}

/* FLUSH and a FUA WRITE go to the transport's runner: no reply and no
 * later request runs until the job is back; then the replies come in
 * request order, and what the FUA write wrote reads back. */
static void
test_nbd_flush_offload (Fixture *f, gconstpointer data)
{
  DfSessions *ss = df_sessions_new ();
  nbd_conn *c = nbd_conn_new (f->ex, ss, "test");
  DfEngineConn *e = nbd_conn_engine (c);
  DfEngineJob *held = NULL;
  g_autoptr (GByteArray) in = g_byte_array_new ();
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GArray) got = NULL;
  uint8_t payload[512];

  e->offload = hold_job;
  e->offload_opaque = &held;
  tu_put_be32 (in, 3);
  put_info (in, 7, "device/pc01"); /* GO */
  g_assert_true (df_engine_feed (e, in->data, in->len, df_engine_sink_bytes,
                                 out));
  g_assert_cmpint (nbd_conn_state (c), ==, NBD_STATE_TRANSMISSION);
  g_byte_array_set_size (out, 0);

  g_byte_array_set_size (in, 0);
  put_request (in, 0, 3, 1, 0, 0);   /* FLUSH */
  put_request (in, 0, 0, 2, 0, 512); /* READ */
  df_engine_feed (e, in->data, in->len, df_engine_sink_bytes, out);
  g_assert_nonnull (held);
  g_assert_cmpuint (out->len, ==, 0);
  g_assert_false (df_engine_has_work (e));
  run_held_job (&held);
  df_engine_pump (e, df_engine_sink_bytes, out);
  got = reply_cookies (out, 512, 2);
  g_assert_cmpuint (got->len, ==, 2);
  g_assert_cmpuint (g_array_index (got, uint64_t, 0), ==, 1);
  g_assert_cmpuint (g_array_index (got, uint64_t, 1), ==, 2);
  g_clear_pointer (&got, g_array_unref);

  memset (payload, 0x5a, sizeof payload);
  g_byte_array_set_size (in, 0);
  put_request (in, 1, 1, 3, 4096, sizeof payload); /* WRITE, FUA */
  g_byte_array_append (in, payload, sizeof payload);
  put_request (in, 0, 0, 4, 4096, sizeof payload); /* READ it back */
  df_engine_feed (e, in->data, in->len, df_engine_sink_bytes, out);
  g_assert_nonnull (held);
  g_assert_cmpuint (out->len, ==, 0);
  run_held_job (&held);
  df_engine_pump (e, df_engine_sink_bytes, out);
  g_assert_cmpuint (out->len, ==, 16 + 16 + sizeof payload);
  g_assert_cmpmem (out->data + 32, sizeof payload, payload, sizeof payload);
  got = reply_cookies (out, sizeof payload, 4);
  g_assert_cmpuint (got->len, ==, 2);
  g_assert_cmpuint (g_array_index (got, uint64_t, 0), ==, 3);
  g_assert_cmpuint (g_array_index (got, uint64_t, 1), ==, 4);

  df_engine_free (e);
  df_sessions_free (ss);
}

int
main (int argc, char **argv)
{
  test_db_init ();
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/exports/name-parse", test_name_parse);
#define FARM_TEST(path, fn)                                                   \
  g_test_add (path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  FARM_TEST ("/exports/vdisk", test_vdisk);
  FARM_TEST ("/exports/device-isolation", test_device_isolation);
  FARM_TEST ("/exports/generation", test_generation);
  FARM_TEST ("/exports/version-change-same-generation",
             test_version_change_same_generation);
  FARM_TEST ("/exports/persistent", test_persistent);
  FARM_TEST ("/exports/list", test_list);
  FARM_TEST ("/exports/binding-check", test_binding_check);
  FARM_TEST ("/exports/binding-checker-thread", test_binding_checker_thread);
  FARM_TEST ("/exports/binding-flush", test_binding_flush);
  FARM_TEST ("/exports/maintenance-version-new",
             test_maintenance_version_new);
  FARM_TEST ("/exports/foreach-cache-and-quota", test_foreach_cache_and_quota);
  FARM_TEST ("/exports/hypervisor", test_hypervisor);
  FARM_TEST ("/exports/private", test_private);
  FARM_TEST ("/exports/many-opens", test_many_opens);
  FARM_TEST ("/exports/concurrent-opens", test_concurrent_opens);
  FARM_TEST ("/admin/endpoints", test_admin);
  FARM_TEST ("/admin/unix", test_admin_unix);
  FARM_TEST ("/exports/tls-authorize", test_tls_authorize);
  FARM_TEST ("/exports/nbd-psk", test_nbd_psk);
  FARM_TEST ("/exports/nbd-tls-setting", test_nbd_tls_setting);
  FARM_TEST ("/nbd/starttls-engine", test_nbd_starttls_engine);
  FARM_TEST ("/nbd/starttls-off", test_nbd_starttls_off);
  FARM_TEST ("/nbd/flush-offload", test_nbd_flush_offload);
  return g_test_run ();
}
