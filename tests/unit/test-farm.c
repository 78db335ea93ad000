/* Unit tests for lib/farm: open/create, migrations, accessors, bad inputs
 * leaving the DB unchanged, audit rows, transactions, version selection by
 * device type, and two handles on one DB (WAL). */
#include "test-db.h"
#include "farm.h"
#include "farm-private.h"
#include "common.h"
#include "vdisk.h"
#include "test-util.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <string.h>
#include <sys/stat.h>

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* ---- helpers ---------------------------------------------------------- */

typedef struct {
  char *dir;   /* temporary farm directory, removed at teardown */
  DfFarm *farm;
} Fixture;

static char *
farm_subdir (const char *tmp)
{
  return g_build_filename (tmp, "farm", NULL);
}

static DfFarm *
open_ok (const char *dir, bool create)
{
  g_autoptr (GError) err = NULL;
  DfFarm *f = test_farm_open (dir, create, "test:unit", &err);
  g_assert_no_error (err);
  g_assert_nonnull (f);
  return f;
}

static void
fx_setup (Fixture *fx, gconstpointer data)
{
  g_autofree char *tmp = tu_tmpdir ();
  fx->dir = farm_subdir (tmp);
  fx->farm = open_ok (fx->dir, true);
}

static void
fx_teardown (Fixture *fx, gconstpointer data)
{
  df_farm_close (fx->farm);
  g_autofree char *tmp = g_path_get_dirname (fx->dir);
  tu_rmrf (tmp);
  g_free (fx->dir);
}

/* Raw connection to the farm DB of dir (for dumps and tampering); on
 * PostgreSQL raw_exec, raw_text and dump_db go to test-db.c instead and
 * the tests of SQLite's own file (PRAGMAs, sqlite_master) skip. */

/* The farm DB of dir as df_db_open takes it (new string). */
static char *
farm_db_target (const char *dir)
{
  char *t = test_db_target (dir, false);
  return t ? t : g_build_filename (dir, "farm.db", NULL);
}

/* The test checks SQLite's file itself: skipped on PostgreSQL. */
#define SQLITE_ONLY()                                                     \
  do                                                                      \
    {                                                                     \
      if (test_db_is_pg ())                                               \
        {                                                                 \
          g_test_skip ("checks SQLite's farm.db itself");                 \
          return;                                                         \
        }                                                                 \
    }                                                                     \
  while (0)

static sqlite3 *
raw_open (const char *dir)
{
  g_autofree char *path = g_build_filename (dir, "farm.db", NULL);
  sqlite3 *db = NULL;
  g_assert_cmpint (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READWRITE, NULL),
                   ==, SQLITE_OK);
  sqlite3_busy_timeout (db, 5000);
  return db;
}

static void
raw_exec (const char *dir, const char *sql)
{
  if (test_db_is_pg ())
    {
      test_db_pg_exec (dir, sql);
      return;
    }
  sqlite3 *db = raw_open (dir);
  char *msg = NULL;
  int rc = sqlite3_exec (db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK)
    g_error ("%s: %s", sql, msg);
  sqlite3_close (db);
}

static char *
raw_text (const char *dir, const char *sql)
{
  if (test_db_is_pg ())
    return test_db_pg_text (dir, sql);
  sqlite3 *db = raw_open (dir);
  sqlite3_stmt *st = NULL;
  g_assert_cmpint (sqlite3_prepare_v2 (db, sql, -1, &st, NULL), ==, SQLITE_OK);
  char *out = NULL;
  if (sqlite3_step (st) == SQLITE_ROW && sqlite3_column_text (st, 0))
    out = g_strdup ((const char *) sqlite3_column_text (st, 0));
  sqlite3_finalize (st);
  sqlite3_close (db);
  return out;
}

/* Every row of every table plus user_version and the schema, as text. */
static char *
dump_db (const char *dir)
{
  if (test_db_is_pg ())
    return test_db_pg_dump (dir);
  sqlite3 *db = raw_open (dir);
  GString *gs = g_string_new (NULL);
  sqlite3_stmt *tables = NULL;
  g_assert_cmpint (sqlite3_prepare_v2 (db,
    "SELECT name, sql FROM sqlite_master ORDER BY name", -1, &tables, NULL),
    ==, SQLITE_OK);
  while (sqlite3_step (tables) == SQLITE_ROW)
    {
      const char *name = (const char *) sqlite3_column_text (tables, 0);
      const char *sql = (const char *) sqlite3_column_text (tables, 1);
      g_string_append_printf (gs, "== %s\n%s\n", name, sql ? sql : "");
      if (!sql || !g_str_has_prefix (sql, "CREATE TABLE"))
        continue;
      g_autofree char *q = g_strdup_printf ("SELECT * FROM \"%s\" "
                                            "ORDER BY rowid", name);
      sqlite3_stmt *rows = NULL;
      g_assert_cmpint (sqlite3_prepare_v2 (db, q, -1, &rows, NULL), ==,
                       SQLITE_OK);
      while (sqlite3_step (rows) == SQLITE_ROW)
        {
          for (int c = 0; c < sqlite3_column_count (rows); c++)
            {
              const unsigned char *t = sqlite3_column_text (rows, c);
              g_string_append_printf (gs, "%s|", t ? (const char *) t : "∅");
            }
          g_string_append_c (gs, '\n');
        }
      sqlite3_finalize (rows);
    }
  sqlite3_finalize (tables);
  sqlite3_close (db);
  g_autofree char *uv = raw_text (dir, "PRAGMA user_version");
  g_string_append_printf (gs, "user_version %s\n", uv);
  return g_string_free (gs, FALSE);
}

static int
count_rows (const char *dir, const char *table)
{
  g_autofree char *sql = g_strdup_printf ("SELECT count(*) FROM %s", table);
  g_autofree char *n = raw_text (dir, sql);
  return atoi (n);
}

static bool
is_iso_utc (const char *s)
{
  return s && g_regex_match_simple (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$", s, 0, 0);
}

static void
add_vdisk (DfFarm *f, const char *name)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *file = g_strdup_printf ("%s.0.qcow2", name);
  g_assert_true (df_farm_vdisk_add (f, name, 1 << 30, file, SHA_A, 4096,
                                    &err));
  g_assert_no_error (err);
}

/* Firmware: the rule from inspection facts, the EFI loader grammar, and
 * both stored on the vDisk (NULL until inspected: boots anywhere). */
static void
test_vdisk_firmware (Fixture *fx, gconstpointer data)
{
  static const struct { DfBootFacts f; DfFirmware want; } rules[] = {
    { { .mbr_boot_code = true }, DF_FIRMWARE_BIOS },
    { { .esp_loader = true }, DF_FIRMWARE_UEFI },
    { { .mbr_boot_code = true, .esp_loader = true }, DF_FIRMWARE_BOTH },
    { { .gpt = true, .mbr_boot_code = true }, DF_FIRMWARE_NONE },
    { { .gpt = true, .esp_loader = true, .mbr_boot_code = true },
      DF_FIRMWARE_UEFI },
    { { .gpt = true, .bios_boot_partition = true }, DF_FIRMWARE_BIOS },
    { { .gpt = true, .bios_boot_partition = true, .esp_loader = true },
      DF_FIRMWARE_BOTH },
    { { 0 }, DF_FIRMWARE_NONE },
  };
  for (guint i = 0; i < G_N_ELEMENTS (rules); i++)
    g_assert_cmpint (df_firmware_from_facts (&rules[i].f), ==, rules[i].want);
  static const char *const bad[] = {
    "", "EFI\\BOOT\\BOOTX64.EFI", "\\EFI\\\\x.efi", "\\EFI\\x.exe",
    "\\EFI\\a b.efi", "\\EFI\\${x}.efi", "\\EFI\\x.efi\n",
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GError) err = NULL;
      g_assert_false (df_efi_loader_path_ok (bad[i], &err));
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
    }
  g_assert_true (df_efi_loader_path_ok (DF_DEFAULT_EFI_LOADER, NULL));
  g_assert_true (df_efi_loader_path_ok ("\\EFI\\debian\\shimx64.efi", NULL));

  add_vdisk (fx->farm, "gold");
  g_autoptr (GError) err = NULL;
  g_autoptr (DfVdisk) v0 = df_farm_vdisk_get (fx->farm, "gold", &err);
  g_assert_cmpint (v0->firmware, ==, DF_FIRMWARE_UNKNOWN);
  g_assert_null (v0->efi_loader);
  g_assert_true (df_firmware_boots_bios (v0->firmware)
                 && df_firmware_boots_uefi (v0->firmware));
  g_assert_true (df_farm_vdisk_set_firmware (fx->farm, "gold",
                                             DF_FIRMWARE_BIOS, &err));
  g_assert_true (df_farm_vdisk_set_efi_loader (fx->farm, "gold",
                                               "\\EFI\\x\\y.efi", &err));
  g_assert_false (df_farm_vdisk_set_efi_loader (fx->farm, "gold", "x.efi",
                                                &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_autoptr (DfVdisk) v1 = df_farm_vdisk_get (fx->farm, "gold", &err);
  g_assert_cmpint (v1->firmware, ==, DF_FIRMWARE_BIOS);
  g_assert_cmpstr (v1->efi_loader, ==, "\\EFI\\x\\y.efi");
  g_assert_false (df_firmware_boots_uefi (v1->firmware));
  g_assert_true (df_farm_vdisk_set_efi_loader (fx->farm, "gold", NULL, &err));
  g_autoptr (DfVdisk) v2 = df_farm_vdisk_get (fx->farm, "gold", &err);
  g_assert_null (v2->efi_loader);
}

static void
add_version (DfFarm *f, const char *vdisk, int n, DfVersionState state)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *file = g_strdup_printf ("%s.%d.qcow2", vdisk, n);
  g_assert_true (df_farm_version_add (f, vdisk, n, n - 1, file,
                                      state == DF_VSTATE_MAINTENANCE
                                        ? NULL : SHA_B,
                                      1 << 30, 8192, state, &err));
  g_assert_no_error (err);
}

static void
add_device (DfFarm *f, const char *name, const char *mac, const char *vdisk,
            const char *collection, const char *type)
{
  g_autoptr (GError) err = NULL;
  DfDevice d = { .name = (char *) name, .mac = (char *) mac,
                 .vdisk = (char *) vdisk, .collection = (char *) collection,
                 .type = (char *) type };
  g_assert_true (df_farm_device_add (f, &d, &err));
  g_assert_no_error (err);
}

/* ---- open / create / migrations --------------------------------------- */

static void
test_open_create (void)
{
  SQLITE_ONLY ();
  g_autofree char *tmp = tu_tmpdir ();
  g_autofree char *dir = farm_subdir (tmp);
  g_autoptr (GError) err = NULL;

  DfFarm *f = test_farm_open (dir, false, "t", &err);
  g_assert_null (f);
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_assert_nonnull (strstr (err->message, "run 'diskfarm init'"));
  g_assert_nonnull (strstr (err->message, dir));
  g_assert_false (g_file_test (dir, G_FILE_TEST_EXISTS));
  g_clear_error (&err);

  f = open_ok (dir, true);
  g_assert_cmpstr (df_farm_dir (f), ==, dir);
  g_assert_cmpint (df_farm_schema_version (f), ==, df_farm_n_migrations);
  const char *subs[] = { "", "store", "cache", "boot", "run" };
  for (gsize i = 0; i < G_N_ELEMENTS (subs); i++)
    {
      g_autofree char *p = g_build_filename (dir, subs[i], NULL);
      GStatBuf sb;
      g_assert_cmpint (g_stat (p, &sb), ==, 0);
      g_assert_true (S_ISDIR (sb.st_mode));
      g_assert_cmpint (sb.st_mode & 0777, ==, 0750);
    }
  g_autofree char *dbpath = g_build_filename (dir, "farm.db", NULL);
  GStatBuf dbst;
  g_assert_cmpint (g_stat (dbpath, &dbst), ==, 0);
  g_assert_cmpint (dbst.st_mode & 0777, ==, 0640);
  g_autofree char *mode = raw_text (dir, "PRAGMA journal_mode");
  g_assert_cmpstr (mode, ==, "wal");

  g_autofree char *sp = df_farm_store_dir (f, "win11");
  g_autofree char *vp = df_farm_version_path (f, "win11", 3);
  g_autofree char *cp = df_farm_cache_dir (f, "pc1");
  g_autofree char *want_sp = g_build_filename (dir, "store", "win11", NULL);
  g_autofree char *want_vp = g_build_filename (dir, "store", "win11",
                                               "win11.3.qcow2", NULL);
  g_autofree char *want_cp = g_build_filename (dir, "cache", "pc1", NULL);
  g_assert_cmpstr (sp, ==, want_sp);
  g_assert_cmpstr (vp, ==, want_vp);
  g_assert_cmpstr (cp, ==, want_cp);
  add_vdisk (f, "win11");
  df_farm_close (f);

  /* Reopen without create: data is there; create again is harmless. */
  f = open_ok (dir, false);
  g_autoptr (DfVdisk) v = df_farm_vdisk_get (f, "win11", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (v->name, ==, "win11");
  df_farm_close (f);
  f = open_ok (dir, true);
  g_autoptr (GPtrArray) all = df_farm_vdisk_list (f, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (all->len, ==, 1);
  df_farm_close (f);
  tu_rmrf (tmp);
}

static void
test_migrations_idempotent (void)
{
  SQLITE_ONLY ();
  g_autofree char *tmp = tu_tmpdir ();
  g_autofree char *dir = farm_subdir (tmp);
  df_farm_close (open_ok (dir, true));
  g_autofree char *first = dump_db (dir);
  for (int i = 0; i < 3; i++)
    df_farm_close (open_ok (dir, i == 0));
  g_autofree char *again = dump_db (dir);
  g_assert_cmpstr (first, ==, again);
  g_autofree char *uv = raw_text (dir, "PRAGMA user_version");
  g_autofree char *want = g_strdup_printf ("%u", df_farm_n_migrations);
  g_assert_cmpstr (uv, ==, want);
  g_autofree char *app = raw_text (dir, "PRAGMA application_id");
  g_assert_cmpint (atoi (app), ==, DF_FARM_APPLICATION_ID);

  /* A failing step leaves the DB at the previous version, with nothing of
   * the step applied; a good step then applies once. */
  DfMigration list[16];
  g_assert_cmpuint (df_farm_n_migrations + 1, <=, G_N_ELEMENTS (list));
  memcpy (list, df_farm_migrations, df_farm_n_migrations * sizeof list[0]);
  guint n = df_farm_n_migrations;
  list[n] = (DfMigration) { (int) n + 1, "broken",
    "CREATE TABLE half (x INTEGER); INSERT INTO nosuchtable VALUES (1);",
    NULL };
  g_autofree char *path = g_build_filename (dir, "farm.db", NULL);
  DfDb *db = df_db_open (path, false, NULL);
  g_assert_nonnull (db);
  int version = -1;
  g_autoptr (GError) err = NULL;
  g_assert_false (df_farm_migrate (db, list, n + 1, &version, &err));
  g_assert_nonnull (err);
  g_assert_nonnull (strstr (err->message, "broken"));
  g_clear_error (&err);
  g_autofree char *after_bad = dump_db (dir);
  g_assert_cmpstr (after_bad, ==, first);

  list[n].sql = "CREATE TABLE extra (x INTEGER);";
  g_assert_true (df_farm_migrate (db, list, n + 1, &version, &err));
  g_assert_no_error (err);
  g_assert_cmpint (version, ==, (int) n + 1);
  g_assert_true (df_farm_migrate (db, list, n + 1, &version, &err));
  g_assert_cmpint (version, ==, (int) n + 1);
  df_db_close (db);
  g_autofree char *uv2 = raw_text (dir, "PRAGMA user_version");
  g_assert_cmpint (atoi (uv2), ==, (int) n + 1);

  /* This code now sees a DB newer than itself. */
  DfFarm *f = test_farm_open (dir, false, "t", &err);
  g_assert_null (f);
  g_assert_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED);
  g_assert_nonnull (strstr (err->message, "newer"));
  tu_rmrf (tmp);
}

static void
test_newer_refused (void)
{
  SQLITE_ONLY ();
  g_autofree char *tmp = tu_tmpdir ();
  g_autofree char *dir = farm_subdir (tmp);
  df_farm_close (open_ok (dir, true));
  raw_exec (dir, "PRAGMA user_version = 999");
  g_autofree char *before = dump_db (dir);
  g_autoptr (GError) err = NULL;
  DfFarm *f = test_farm_open (dir, false, "t", &err);
  g_assert_null (f);
  g_assert_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED);
  g_test_message ("%s", err->message);
  g_assert_nonnull (strstr (err->message, "999"));
  g_assert_nonnull (strstr (err->message, "upgrade diskfarm"));
  g_clear_error (&err);
  f = test_farm_open (dir, true, "t", &err);
  g_assert_null (f);
  g_assert_error (err, DF_ERROR, DF_ERROR_UNSUPPORTED);
  g_autofree char *after = dump_db (dir);
  g_assert_cmpstr (before, ==, after);
  tu_rmrf (tmp);
}

static void
test_not_a_farm (void)
{
  SQLITE_ONLY ();
  g_autofree char *tmp = tu_tmpdir ();
  g_autofree char *dir = farm_subdir (tmp);
  g_autofree char *db = g_build_filename (dir, "farm.db", NULL);
  g_autoptr (GError) err = NULL;
  g_assert_cmpint (g_mkdir (dir, 0750), ==, 0);

  /* Another program's SQLite DB. */
  sqlite3 *raw = NULL;
  g_assert_cmpint (sqlite3_open (db, &raw), ==, SQLITE_OK);
  g_assert_cmpint (sqlite3_exec (raw, "CREATE TABLE t (x)", NULL, NULL, NULL),
                   ==, SQLITE_OK);
  sqlite3_close (raw);
  DfFarm *f = test_farm_open (dir, false, "t", &err);
  g_assert_null (f);
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_assert_nonnull (strstr (err->message, "not a diskfarm"));
  g_clear_error (&err);

  /* Not SQLite at all. */
  g_assert_true (g_file_set_contents (db, "this is not a database, really "
                                      "not, it is only text of some length",
                                      -1, NULL));
  f = test_farm_open (dir, false, "t", &err);
  g_assert_null (f);
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  tu_rmrf (tmp);
}

/* ---- accessors -------------------------------------------------------- */

static void
test_vdisks_versions (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  g_autoptr (GError) err = NULL;
  g_assert_true (df_farm_vdisk_add (f, "win11", 10ULL << 30, "win11.0.qcow2",
                                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                                    "AAAAAAAAAAAAAAAAAAAAAAAA", 12345, &err));
  g_assert_no_error (err);
  add_vdisk (f, "alpine");

  g_autoptr (DfVdisk) v = df_farm_vdisk_get (f, "win11", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (v->name, ==, "win11");
  g_assert_cmpuint (v->virtual_size, ==, 10ULL << 30);
  g_assert_null (v->description);
  g_assert_true (is_iso_utc (v->created));

  g_autoptr (GPtrArray) list = df_farm_vdisk_list (f, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (list->len, ==, 2);
  g_assert_cmpstr (((DfVdisk *) list->pdata[0])->name, ==, "alpine");
  g_assert_cmpstr (((DfVdisk *) list->pdata[1])->name, ==, "win11");

  g_autoptr (DfVersion) base = df_farm_version_get (f, "win11", 0, &err);
  g_assert_no_error (err);
  g_assert_cmpstr (base->vdisk, ==, "win11");
  g_assert_cmpint (base->number, ==, 0);
  g_assert_cmpint (base->parent, ==, -1);
  g_assert_cmpstr (base->file, ==, "win11.0.qcow2");
  g_assert_cmpuint (strlen (base->sha256), ==, 64);
  g_assert_cmpstr (base->sha256, ==, SHA_A);   /* stored lower-case */
  g_assert_cmpuint (base->virtual_size, ==, 10ULL << 30);
  g_assert_cmpuint (base->file_size, ==, 12345);
  g_assert_cmpint (base->state, ==, DF_VSTATE_PRODUCTION);
  g_assert_null (base->pending_state);
  g_assert_null (base->pending_at);
  g_assert_true (is_iso_utc (base->created));

  add_version (f, "win11", 1, DF_VSTATE_TEST);
  add_version (f, "win11", 2, DF_VSTATE_MAINTENANCE);
  g_autoptr (DfVersion) m = df_farm_version_get (f, "win11", 2, &err);
  g_assert_no_error (err);
  g_assert_cmpint (m->parent, ==, 1);
  g_assert_null (m->sha256);
  g_assert_cmpint (m->state, ==, DF_VSTATE_MAINTENANCE);

  g_autoptr (GPtrArray) vl = df_farm_version_list (f, "win11", &err);
  g_assert_no_error (err);
  g_assert_cmpuint (vl->len, ==, 3);
  for (guint i = 0; i < vl->len; i++)
    g_assert_cmpint (((DfVersion *) vl->pdata[i])->number, ==, (int) i);

  g_assert_true (df_farm_version_set_state (f, "win11", 1,
                                            DF_VSTATE_PRODUCTION, &err));
  g_assert_no_error (err);
  g_autoptr (DfVersion) one = df_farm_version_get (f, "win11", 1, &err);
  g_assert_cmpint (one->state, ==, DF_VSTATE_PRODUCTION);
  /* Demote back to test is allowed. */
  g_assert_true (df_farm_version_set_state (f, "win11", 1, DF_VSTATE_TEST,
                                            &err));

  /* State names round-trip. */
  for (int s = DF_VSTATE_MAINTENANCE; s <= DF_VSTATE_PENDING; s++)
    {
      DfVersionState out;
      g_assert_true (df_version_state_parse (df_version_state_name (s), &out,
                                             &err));
      g_assert_cmpint (out, ==, s);
    }
  DfVersionState out;
  g_assert_false (df_version_state_parse ("Production", &out, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);

  /* Remove: the store files are the console's business; rows go. */
  g_assert_true (df_farm_vdisk_remove (f, "alpine", &err));
  g_assert_no_error (err);
  g_assert_null (df_farm_vdisk_get (f, "alpine", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  g_assert_cmpint (count_rows (fx->dir, "versions"), ==, 3);
}

static void
test_collections_devices (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  g_autoptr (GError) err = NULL;
  add_vdisk (f, "win11");
  add_vdisk (f, "alpine");
  g_assert_true (df_farm_collection_add (f, "lab", "the lab", "alpine",
                                         &err));
  g_assert_no_error (err);
  g_assert_true (df_farm_collection_add (f, "office", NULL, NULL, &err));
  g_assert_no_error (err);

  g_autoptr (DfCollection) c = df_farm_collection_get (f, "lab", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (c->name, ==, "lab");
  g_assert_cmpstr (c->description, ==, "the lab");
  g_assert_cmpstr (c->vdisk, ==, "alpine");
  g_assert_true (is_iso_utc (c->created));
  g_autoptr (GPtrArray) cl = df_farm_collection_list (f, &err);
  g_assert_cmpuint (cl->len, ==, 2);
  g_assert_null (((DfCollection *) cl->pdata[1])->vdisk);

  /* Full device, MAC given in another spelling, stored canonical. */
  DfDevice d = { .name = "pc1", .mac = "52-54-00-AB-CD-01", .vdisk = "win11",
                 .collection = "office", .type = "test",
                 .cache_mode = "ram:0512", .quota = 1 << 30 };
  g_assert_true (df_farm_device_add (f, &d, &err));
  g_assert_no_error (err);
  /* Defaults: production, server cache, vdisk from the collection. */
  add_device (f, "pc2", "5254.00ab.cd02", NULL, "lab", NULL);
  add_device (f, "pc3", "525400abcd03", "win11", NULL, "maintenance");

  const char *keys[] = { "pc1", "52:54:00:ab:cd:01", "52-54-00-AB-CD-01",
                         "5254.00ab.cd01", "525400ABCD01" };
  for (gsize i = 0; i < G_N_ELEMENTS (keys); i++)
    {
      g_autoptr (DfDevice) got = df_farm_device_get (f, keys[i], &err);
      g_assert_no_error (err);
      g_assert_cmpstr (got->name, ==, "pc1");
      g_assert_cmpstr (got->mac, ==, "52:54:00:ab:cd:01");
      g_assert_cmpstr (got->vdisk, ==, "win11");
      g_assert_cmpstr (got->collection, ==, "office");
      g_assert_cmpstr (got->type, ==, "test");
      g_assert_cmpstr (got->cache_mode, ==, "ram:512");
      g_assert_cmpuint (got->quota, ==, 1 << 30);
      g_assert_cmpint (got->generation, ==, 1);
      g_assert_true (is_iso_utc (got->created));
    }
  g_autoptr (DfDevice) pc2 = df_farm_device_get (f, "pc2", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (pc2->mac, ==, "52:54:00:ab:cd:02");
  g_assert_cmpstr (pc2->vdisk, ==, "alpine");
  g_assert_cmpstr (pc2->type, ==, "production");
  g_assert_cmpstr (pc2->cache_mode, ==, "server");
  g_assert_cmpuint (pc2->quota, ==, 0);
  g_assert_null (df_farm_device_get (f, "52:54:00:00:00:99", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_assert_nonnull (strstr (err->message, "52:54:00:00:00:99"));
  g_clear_error (&err);
  g_assert_null (df_farm_device_get (f, "../etc", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);

  g_autoptr (GPtrArray) all = df_farm_device_list (f, NULL, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (all->len, ==, 3);
  g_autoptr (GPtrArray) lab = df_farm_device_list (f, "lab", &err);
  g_assert_cmpuint (lab->len, ==, 1);
  g_assert_cmpstr (((DfDevice *) lab->pdata[0])->name, ==, "pc2");
  g_assert_null (df_farm_device_list (f, "nolab", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);

  /* Update: move pc2 out of lab to win11 with a new MAC and cache. */
  pc2->vdisk = (g_free (pc2->vdisk), g_strdup ("win11"));
  pc2->collection = (g_free (pc2->collection), NULL);
  pc2->mac = (g_free (pc2->mac), g_strdup ("52:54:00:ab:cd:22"));
  pc2->cache_mode = (g_free (pc2->cache_mode), g_strdup ("server-persistent"));
  pc2->quota = 4096;
  g_assert_true (df_farm_device_update (f, pc2, &err));
  g_assert_no_error (err);
  g_autoptr (DfDevice) pc2b = df_farm_device_get (f, "52:54:00:ab:cd:22",
                                                  &err);
  g_assert_no_error (err);
  g_assert_cmpstr (pc2b->name, ==, "pc2");
  g_assert_cmpstr (pc2b->vdisk, ==, "win11");
  g_assert_null (pc2b->collection);
  g_assert_cmpstr (pc2b->cache_mode, ==, "server-persistent");
  g_assert_cmpuint (pc2b->quota, ==, 4096);
  g_assert_null (df_farm_device_get (f, "52:54:00:ab:cd:02", &err));
  g_clear_error (&err);

  /* The hypervisor mode (no server-side cache) is stored as given. */
  g_autoptr (DfDevice) pc3 = df_farm_device_get (f, "pc3", &err);
  g_assert_no_error (err);
  pc3->cache_mode = (g_free (pc3->cache_mode), g_strdup ("hypervisor"));
  g_assert_true (df_farm_device_update (f, pc3, &err));
  g_assert_no_error (err);
  g_autoptr (DfDevice) pc3b = df_farm_device_get (f, "pc3", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (pc3b->cache_mode, ==, "hypervisor");

  gint64 gen = 0;
  g_assert_true (df_farm_device_new_generation (f, "pc1", &gen, &err));
  g_assert_cmpint (gen, ==, 2);
  g_assert_true (df_farm_device_new_generation (f, "pc1", &gen, &err));
  g_assert_cmpint (gen, ==, 3);
  g_autoptr (DfDevice) pc1 = df_farm_device_get (f, "pc1", &err);
  g_assert_cmpint (pc1->generation, ==, 3);

  /* vdisk in use: BUSY naming the devices; free after removing them. */
  g_assert_false (df_farm_vdisk_remove (f, "win11", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_test_message ("%s", err->message);
  g_assert_nonnull (strstr (err->message, "pc1, pc2, pc3"));
  g_clear_error (&err);
  g_assert_false (df_farm_vdisk_remove (f, "alpine", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_assert_nonnull (strstr (err->message, "lab"));
  g_clear_error (&err);
  for (int i = 1; i <= 3; i++)
    {
      g_autofree char *n = g_strdup_printf ("pc%d", i);
      g_assert_true (df_farm_device_remove (f, n, &err));
      g_assert_no_error (err);
    }
  g_assert_true (df_farm_vdisk_remove (f, "win11", &err));
  g_assert_no_error (err);
  g_assert_cmpint (count_rows (fx->dir, "devices"), ==, 0);
}

/* ---- one cache-mode grammar ---------------------------------------------- */

/* The farm takes exactly the modes the vdisk engine opens, and stores them
 * in a spelling the engine reads back to the same mode. */
static void
test_cache_modes_one_grammar (Fixture *fx, gconstpointer data)
{
  static const char *const modes[] = {
    "server", "server-persistent", "hypervisor", "ram:1", "ram:512",
    "ram:1.5G", "ram:1536M", "ram:1536m", "ram:1025K", "ram:1048576",
    "ram:1T", "ram:1048577", "ram:4294967295", "ram:2T", "ram:0",
    "ram:1023K", "ram:", "ram:x", "ram:1.5", "ram:-1", "RAM:5", "server ",
    "",
  };
  add_vdisk (fx->farm, "base");
  for (gsize i = 0; i < G_N_ELEMENTS (modes); i++)
    {
      DfCacheMode want, back;
      g_autoptr (GError) verr = NULL, ferr = NULL;
      g_test_message ("mode '%s'", modes[i]);
      bool engine_ok = df_cache_mode_parse (modes[i], &want, &verr);
      DfDevice d = { .name = (char *) "pcm", .mac = (char *) "52:54:00:aa:00:01",
                     .vdisk = (char *) "base", .cache_mode = (char *) modes[i] };
      bool farm_ok = df_farm_device_add (fx->farm, &d, &ferr);
      g_assert_cmpint (farm_ok, ==, engine_ok);
      if (!farm_ok)
        {
          g_assert_cmpstr (ferr->message, ==, verr->message);
          continue;
        }
      g_autoptr (DfDevice) got = df_farm_device_get (fx->farm, "pcm", &ferr);
      g_assert_no_error (ferr);
      g_assert_true (df_cache_mode_parse (got->cache_mode, &back, &verr));
      g_assert_cmpint (back.kind, ==, want.kind);
      g_assert_cmpuint (back.ram_limit, ==, want.ram_limit);
      g_assert_true (df_farm_device_remove (fx->farm, "pcm", &ferr));
    }
}

/* Device names are case-insensitive everywhere the farm looks them up. */
static void
test_device_names_nocase (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  add_vdisk (fx->farm, "base");
  add_device (fx->farm, "pc01", "52:54:00:00:00:01", "base", NULL, NULL);
  g_autoptr (DfDevice) d = df_farm_device_get (fx->farm, "PC01", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (d->name, ==, "pc01");
  gint64 gen = 0;
  g_assert_true (df_farm_device_new_generation (fx->farm, "Pc01", &gen, &err));
  g_assert_cmpint (gen, ==, d->generation + 1);
  g_free (d->type);
  d->type = g_strdup ("test");
  g_free (d->name);
  d->name = g_strdup ("PC01");
  g_assert_true (df_farm_device_update (fx->farm, d, &err));
  g_autoptr (DfDevice) d2 = df_farm_device_get (fx->farm, "pc01", &err);
  g_assert_cmpstr (d2->type, ==, "test");
  g_assert_cmpstr (d2->name, ==, "pc01");
  g_assert_true (df_farm_device_remove (fx->farm, "PC01", &err));
  g_autoptr (DfDevice) gone = df_farm_device_get (fx->farm, "pc01", &err);
  g_assert_null (gone);
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
}

/* An empty farm directory is an error, not an assertion. */
static void
test_open_empty_dir (void)
{
  static const char *const dirs[] = { "", " ", NULL };
  for (gsize i = 0; i < G_N_ELEMENTS (dirs); i++)
    {
      g_autoptr (GError) err = NULL;
      g_assert_null (test_farm_open (dirs[i], true, "test:unit", &err));
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_assert_cmpstr (err->message, ==,
                       "the farm directory is an empty string");
    }
}

/* ---- bad inputs ------------------------------------------------------- */

typedef enum {
  OP_DEVICE_ADD, OP_DEVICE_UPDATE, OP_DEVICE_REMOVE, OP_DEVICE_RESET,
  OP_VDISK_ADD, OP_VDISK_REMOVE, OP_VERSION_ADD, OP_VERSION_STATE,
  OP_COLLECTION_ADD, OP_AUDIT, OP_SERVER_ADD,
} Op;

typedef struct {
  Op op;
  const char *name, *mac, *vdisk, *collection, *type, *cache;
  uint64_t num;        /* quota, size, or version number */
  int parent;
  const char *sha;
  int state;
  int code;
  const char *in_message;   /* must appear in the error message */
} BadRow;

#define Q64 ((uint64_t) G_MAXINT64 + 1)
#define LONG64 "a123456789012345678901234567890123456789012345678901234567890123"

static const BadRow bad_rows[] = {
  /* device add: names */
  { OP_DEVICE_ADD, "", "52:54:00:00:01:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, NULL, "52:54:00:00:01:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "-pc", "52:54:00:00:01:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, ".pc", "52:54:00:00:01:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "a/b", "52:54:00:00:01:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "a b", "52:54:00:00:01:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, LONG64, "52:54:00:00:01:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "525400000101", "52:54:00:00:01:01", "base",
    .code = DF_ERROR_INVALID, .in_message = "MAC" },
  /* device add: MACs */
  { OP_DEVICE_ADD, "pcx", NULL, "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:zz", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01:02", "base",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54-00:00:01:01", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "5254.0000.0101x", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "ff:ff:ff:ff:ff:ff", "base",
    .code = DF_ERROR_INVALID, .in_message = "broadcast" },
  { OP_DEVICE_ADD, "pcx", "01:00:5e:00:00:01", "base",
    .code = DF_ERROR_INVALID, .in_message = "multicast" },
  { OP_DEVICE_ADD, "pcx", "00:00:00:00:00:00", "base",
    .code = DF_ERROR_INVALID, .in_message = "all zeros" },
  /* device add: duplicates */
  { OP_DEVICE_ADD, "pc1", "52:54:00:00:01:09", "base", .code = DF_ERROR_EXISTS,
    .in_message = "pc1" },
  { OP_DEVICE_ADD, "PC1", "52:54:00:00:01:09", "base", .code = DF_ERROR_EXISTS,
    .in_message = "device 'PC1' already exists as 'pc1'" },
  { OP_DEVICE_ADD, "Pc2", "52:54:00:00:01:09", "base", .code = DF_ERROR_EXISTS,
    .in_message = "as 'pc2'" },
  { OP_DEVICE_ADD, "pcx", "52-54-00-00-00-01", "base", .code = DF_ERROR_EXISTS,
    .in_message = "device 'pc1'" },
  { OP_DEVICE_ADD, "pcx", "525400000001", "base", .code = DF_ERROR_EXISTS,
    .in_message = "device 'pc1'" },
  /* device add: references */
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "nosuch",
    .code = DF_ERROR_NOT_FOUND, .in_message = "vdisk named 'nosuch'" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", "nolab",
    .code = DF_ERROR_NOT_FOUND, .in_message = "collection named 'nolab'" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", NULL, NULL,
    .code = DF_ERROR_INVALID, .in_message = "needs a vdisk" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", NULL, "empty",
    .code = DF_ERROR_INVALID, .in_message = "needs a vdisk" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "bad/vdisk",
    .code = DF_ERROR_INVALID },
  /* device add: type, cache mode, quota */
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .type = "prod",
    .code = DF_ERROR_INVALID, .in_message = "prod" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .type = "",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .type = "Production",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "disk",
    .code = DF_ERROR_INVALID, .in_message = "disk" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:0",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:-5",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:+5",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:12x",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram: 12",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base",
    .cache = "ram:99999999999999999999999", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:4294967296",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "server ",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "Hypervisor",
    .code = DF_ERROR_INVALID, .in_message = "Hypervisor" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "hypervisor:1",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "hypervisorx",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .num = Q64,
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .num = 1,
    .code = DF_ERROR_INVALID, .in_message = "below one cache block" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .num = 4095,
    .code = DF_ERROR_INVALID, .in_message = "below one cache block" },
  /* modes lib/farm took and lib/vdisk refused at open (above 1 TiB) */
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:1048577",
    .code = DF_ERROR_INVALID, .in_message = "maximum" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base",
    .cache = "ram:4294967295", .code = DF_ERROR_INVALID },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:2T",
    .code = DF_ERROR_INVALID, .in_message = "maximum" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:512K",
    .code = DF_ERROR_INVALID, .in_message = "at least 1 MiB" },
  { OP_DEVICE_ADD, "pcx", "52:54:00:00:01:01", "base", .cache = "ram:1.5",
    .code = DF_ERROR_INVALID },
  /* device update / remove / reset */
  { OP_DEVICE_UPDATE, "nosuch", "52:54:00:00:01:01", "base",
    .code = DF_ERROR_NOT_FOUND, .in_message = "nosuch" },
  { OP_DEVICE_UPDATE, "pc1", "52:54:00:00:00:02", "base",
    .code = DF_ERROR_EXISTS, .in_message = "device 'pc2'" },
  { OP_DEVICE_UPDATE, "pc1", "52:54:00:00:00:01", "nosuch",
    .code = DF_ERROR_NOT_FOUND, .in_message = "nosuch" },
  { OP_DEVICE_UPDATE, "pc1", "52:54:00:00:00:01", "base", "nolab",
    .code = DF_ERROR_NOT_FOUND, .in_message = "nolab" },
  { OP_DEVICE_UPDATE, "pc1", "52:54:00:00:00:01", "base", .type = "x",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_UPDATE, "pc1", "52:54:00:00:00:01", "base", .cache = "ram:0",
    .code = DF_ERROR_INVALID },
  { OP_DEVICE_UPDATE, "pc1", "bad", "base", .code = DF_ERROR_INVALID },
  { OP_DEVICE_UPDATE, "pc1", "ff:ff:ff:ff:ff:ff", "base",
    .code = DF_ERROR_INVALID, .in_message = "broadcast" },
  { OP_DEVICE_UPDATE, "PC1", "52:54:00:00:00:02", "base",
    .code = DF_ERROR_EXISTS, .in_message = "device 'pc2'" },
  { OP_DEVICE_UPDATE, "pc1", "52:54:00:00:00:01", "base", .num = 512,
    .code = DF_ERROR_INVALID, .in_message = "below one cache block" },
  { OP_DEVICE_REMOVE, "nosuch", .code = DF_ERROR_NOT_FOUND },
  { OP_DEVICE_REMOVE, "a/b", .code = DF_ERROR_INVALID },
  { OP_DEVICE_RESET, "nosuch", .code = DF_ERROR_NOT_FOUND },
  /* vdisk add / remove */
  { OP_VDISK_ADD, "base", .num = 1 << 20, .sha = SHA_A, .code = DF_ERROR_EXISTS,
    .in_message = "base" },
  { OP_VDISK_ADD, "", .num = 1 << 20, .sha = SHA_A, .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "..", .num = 1 << 20, .sha = SHA_A, .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v/x", .num = 1 << 20, .sha = SHA_A, .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", .num = 0, .sha = SHA_A, .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", .num = Q64, .sha = SHA_A, .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", .num = 1 << 20, .sha = NULL, .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", .num = 1 << 20, .sha = "abc", .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", .num = 1 << 20, .sha = SHA_A "0",
    .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", .num = 1 << 20,
    .sha = "g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", "../x.qcow2", .num = 1 << 20, .sha = SHA_A,
    .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", "..", .num = 1 << 20, .sha = SHA_A,
    .code = DF_ERROR_INVALID },
  { OP_VDISK_ADD, "v2", "", .num = 1 << 20, .sha = SHA_A,
    .code = DF_ERROR_INVALID },
  { OP_VDISK_REMOVE, "base", .code = DF_ERROR_BUSY, .in_message = "pc1, pc2" },
  { OP_VDISK_REMOVE, "nosuch", .code = DF_ERROR_NOT_FOUND },
  { OP_VDISK_REMOVE, "", .code = DF_ERROR_INVALID },
  /* version add / set state (base has 0 production, 1 maintenance) */
  { OP_VERSION_ADD, .vdisk = "nosuch", .num = 2, .parent = 1, .sha = SHA_B,
    .state = DF_VSTATE_TEST, .code = DF_ERROR_NOT_FOUND,
    .in_message = "nosuch" },
  { OP_VERSION_ADD, .vdisk = "base", .num = 1, .parent = 0, .sha = SHA_B,
    .state = DF_VSTATE_TEST, .code = DF_ERROR_EXISTS },
  { OP_VERSION_ADD, .vdisk = "base", .num = 5, .parent = 4, .sha = SHA_B,
    .state = DF_VSTATE_TEST, .code = DF_ERROR_NOT_FOUND,
    .in_message = "no version 4" },
  { OP_VERSION_ADD, .vdisk = "base", .num = 5, .parent = 5, .sha = SHA_B,
    .state = DF_VSTATE_TEST, .code = DF_ERROR_INVALID },
  { OP_VERSION_ADD, .vdisk = "base", .num = 5, .parent = -2, .sha = SHA_B,
    .state = DF_VSTATE_TEST, .code = DF_ERROR_INVALID },
  { OP_VERSION_ADD, .vdisk = "base", .num = (uint64_t) -1, .parent = -1,
    .sha = SHA_B, .state = DF_VSTATE_TEST, .code = DF_ERROR_INVALID },
  { OP_VERSION_ADD, .vdisk = "base", .num = 2, .parent = 1, .sha = SHA_B,
    .state = DF_VSTATE_PENDING, .code = DF_ERROR_INVALID },
  { OP_VERSION_ADD, .vdisk = "base", .num = 2, .parent = 1, .sha = SHA_B,
    .state = 17, .code = DF_ERROR_INVALID },
  { OP_VERSION_ADD, .vdisk = "base", .num = 2, .parent = 1, .sha = NULL,
    .state = DF_VSTATE_TEST, .code = DF_ERROR_INVALID },
  { OP_VERSION_ADD, .vdisk = "base", .num = 2, .parent = 1, .sha = NULL,
    .state = DF_VSTATE_MAINTENANCE, .code = DF_ERROR_BUSY,
    .in_message = "maintenance version 1" },
  { OP_VERSION_ADD, "a/b", .vdisk = "base", .num = 2, .parent = 1,
    .sha = SHA_B, .state = DF_VSTATE_TEST, .code = DF_ERROR_INVALID },
  { OP_VERSION_STATE, .vdisk = "base", .num = 0,
    .state = DF_VSTATE_MAINTENANCE, .code = DF_ERROR_INVALID,
    .in_message = "published" },
  { OP_VERSION_STATE, .vdisk = "base", .num = 1, .state = DF_VSTATE_TEST,
    .code = DF_ERROR_INVALID, .in_message = "sha256" },
  { OP_VERSION_STATE, .vdisk = "base", .num = 9, .state = DF_VSTATE_TEST,
    .code = DF_ERROR_NOT_FOUND },
  { OP_VERSION_STATE, .vdisk = "base", .num = 0, .state = DF_VSTATE_PENDING,
    .code = DF_ERROR_INVALID },
  { OP_VERSION_STATE, .vdisk = "nosuch", .num = 0, .state = DF_VSTATE_TEST,
    .code = DF_ERROR_NOT_FOUND },
  /* collection add */
  { OP_COLLECTION_ADD, "lab", .code = DF_ERROR_EXISTS, .in_message = "lab" },
  { OP_COLLECTION_ADD, "bad name", .code = DF_ERROR_INVALID },
  { OP_COLLECTION_ADD, "lab2", .vdisk = "nosuch", .code = DF_ERROR_NOT_FOUND,
    .in_message = "nosuch" },
  { OP_COLLECTION_ADD, "lab2", .vdisk = "a/b", .code = DF_ERROR_INVALID },
  /* audit */
  { OP_AUDIT, NULL, .code = DF_ERROR_INVALID },
  /* server add: the address goes into boot media (.mac is the address) */
  { OP_SERVER_ADD, "ss9", "999.1.1.1", .code = DF_ERROR_INVALID,
    .in_message = "not a valid IPv4 address" },
  { OP_SERVER_ADD, "ss9", "10.0.0", .code = DF_ERROR_INVALID },
  { OP_SERVER_ADD, "ss9", "a_b.example", .code = DF_ERROR_INVALID,
    .in_message = "'_'" },
  { OP_SERVER_ADD, "ss9", "-ss.example", .code = DF_ERROR_INVALID },
  { OP_SERVER_ADD, "ss9", "ss..example", .code = DF_ERROR_INVALID },
  { OP_SERVER_ADD, "ss9", "fe80::1::2", .code = DF_ERROR_INVALID,
    .in_message = "IPv6" },
  { OP_SERVER_ADD, "ss9", "", .code = DF_ERROR_INVALID },
};

static bool
run_bad (DfFarm *f, const BadRow *r, GError **err)
{
  DfDevice d = { .name = (char *) r->name, .mac = (char *) r->mac,
                 .vdisk = (char *) r->vdisk,
                 .collection = (char *) r->collection,
                 .type = (char *) r->type, .cache_mode = (char *) r->cache,
                 .quota = r->num };
  switch (r->op)
    {
    case OP_DEVICE_ADD:
      return df_farm_device_add (f, &d, err);
    case OP_DEVICE_UPDATE:
      return df_farm_device_update (f, &d, err);
    case OP_DEVICE_REMOVE:
      return df_farm_device_remove (f, r->name, err);
    case OP_DEVICE_RESET:
      return df_farm_device_new_generation (f, r->name, NULL, err);
    case OP_VDISK_ADD:
      return df_farm_vdisk_add (f, r->name, r->num,
                                r->mac ? r->mac : "v2.0.qcow2", r->sha, 10,
                                err);
    case OP_VDISK_REMOVE:
      return df_farm_vdisk_remove (f, r->name, err);
    case OP_VERSION_ADD:
      return df_farm_version_add (f, r->vdisk, (int) r->num, r->parent,
                                  r->name ? r->name : "f.qcow2", r->sha,
                                  1 << 20, 10, r->state, err);
    case OP_VERSION_STATE:
      return df_farm_version_set_state (f, r->vdisk, (int) r->num, r->state,
                                        err);
    case OP_COLLECTION_ADD:
      return df_farm_collection_add (f, r->name, NULL, r->vdisk, err);
    case OP_AUDIT:
      return df_farm_audit (f, r->name, "x", NULL, err);
    case OP_SERVER_ADD:
      {
        DfServer srv = { .name = (char *) r->name, .address = (char *) r->mac,
                         .iscsi_port = 3260, .nbd_port = 10809,
                         .admin_port = 8080, .power = 1 };
        return df_farm_server_add (f, &srv, err);
      }
    }
  g_assert_not_reached ();
}

static void
setup_bad_farm (DfFarm *f)
{
  g_autoptr (GError) err = NULL;
  add_vdisk (f, "base");
  add_version (f, "base", 1, DF_VSTATE_MAINTENANCE);
  g_assert_true (df_farm_collection_add (f, "lab", NULL, "base", &err));
  g_assert_true (df_farm_collection_add (f, "empty", NULL, NULL, &err));
  add_device (f, "pc1", "52:54:00:00:00:01", "base", "lab", NULL);
  add_device (f, "pc2", "52:54:00:00:00:02", "base", NULL, "test");
}

static void
test_bad_inputs (Fixture *fx, gconstpointer data)
{
  setup_bad_farm (fx->farm);
  g_autofree char *before = dump_db (fx->dir);
  for (gsize i = 0; i < G_N_ELEMENTS (bad_rows); i++)
    {
      const BadRow *r = &bad_rows[i];
      g_autoptr (GError) err = NULL;
      bool ok = run_bad (fx->farm, r, &err);
      g_test_message ("row %zu: op %d name '%s' mac '%s' -> %s", i, r->op,
                      r->name ? r->name : "(null)",
                      r->mac ? r->mac : "(null)",
                      err ? err->message : "success");
      g_assert_false (ok);
      g_assert_error (err, DF_ERROR, r->code);
      if (r->in_message)
        g_assert_nonnull (strstr (err->message, r->in_message));
      g_autofree char *after = dump_db (fx->dir);
      g_assert_cmpstr (before, ==, after);
    }
}

/* The same failures inside an open df_farm_begin transaction roll back only
 * their own savepoint: earlier work in the transaction survives. */
static void
test_bad_inputs_nested (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  setup_bad_farm (fx->farm);
  g_assert_true (df_farm_begin (fx->farm, &err));
  add_vdisk (fx->farm, "inside");
  for (gsize i = 0; i < G_N_ELEMENTS (bad_rows); i++)
    {
      g_autoptr (GError) e = NULL;
      g_assert_false (run_bad (fx->farm, &bad_rows[i], &e));
      g_assert_error (e, DF_ERROR, bad_rows[i].code);
    }
  g_assert_true (df_farm_commit (fx->farm, &err));
  g_assert_no_error (err);
  g_autoptr (DfVdisk) v = df_farm_vdisk_get (fx->farm, "inside", &err);
  g_assert_no_error (err);
  g_assert_cmpint (count_rows (fx->dir, "vdisks"), ==, 2);
  g_assert_cmpint (count_rows (fx->dir, "devices"), ==, 2);
}

/* A failure after the row was written (injected in the audit insert by a
 * trigger) undoes the row too: every mutator is all or nothing, alone and
 * inside an open transaction. */
static void
test_failure_after_write (Fixture *fx, gconstpointer data)
{
  SQLITE_ONLY ();
  DfFarm *f = fx->farm;
  setup_bad_farm (f);
  add_vdisk (f, "unused");
  add_version (f, "base", 2, DF_VSTATE_TEST);
  raw_exec (fx->dir, "CREATE TRIGGER audit_fail BEFORE INSERT ON audit "
                     "BEGIN SELECT RAISE (ABORT, 'injected'); END");
  g_autofree char *before = dump_db (fx->dir);
  DfDevice nd = { .name = "pc9", .mac = "52:54:00:00:00:09", .vdisk = "base" };
  DfDevice up = { .name = "pc1", .mac = "52:54:00:00:00:19", .vdisk = "unused",
                  .type = "test" };
  DfServer srv = { .name = "s9", .address = "192.0.2.9", .iscsi_port = 3260,
                   .nbd_port = 10809, .admin_port = 8001, .power = 1 };
  for (int nested = 0; nested < 2; nested++)
    for (int step = 0; step < 14; step++)
      {
        g_autoptr (GError) err = NULL;
        if (nested)
          g_assert_true (df_farm_begin (f, &err));
        bool ok = true;
        switch (step)
          {
          case 0: ok = df_farm_vdisk_add (f, "v9", 1 << 20, "v9.0.qcow2",
                                          SHA_A, 1, &err); break;
          case 1: ok = df_farm_version_add (f, "base", 3, 2, "b.3.qcow2",
                                            SHA_B, 1 << 20, 1, DF_VSTATE_TEST,
                                            &err); break;
          case 2: ok = df_farm_version_set_state (f, "base", 2,
                                                  DF_VSTATE_PRODUCTION, &err);
                  break;
          case 3: ok = df_farm_collection_add (f, "c9", NULL, "base", &err);
                  break;
          case 4: ok = df_farm_device_add (f, &nd, &err); break;
          case 5: ok = df_farm_device_update (f, &up, &err); break;
          case 6: ok = df_farm_device_remove (f, "pc2", &err); break;
          case 7: ok = df_farm_device_new_generation (f, "pc1", NULL, &err);
                  break;
          case 8: ok = df_farm_vdisk_remove (f, "unused", &err); break;
          case 9: ok = df_farm_chap_set (f, "pc1", "pc1-in", "Secret-1234567",
                                         NULL, &err); break;
          case 10: ok = df_farm_server_add (f, &srv, &err); break;
          case 11: ok = df_farm_setting_set (f, "k9", "v", &err); break;
          case 12: ok = df_farm_vdisk_set_description (f, "unused", "d",
                                                       &err); break;
          case 13: ok = df_farm_vdisk_rename (f, "unused", "unused9", &err);
                   break;
          }
        g_test_message ("step %d nested %d: %s", step, nested,
                        err ? err->message : "ok");
        g_assert_false (ok);
        g_assert_nonnull (err);
        g_assert_nonnull (strstr (err->message, "injected"));
        if (nested)
          g_assert_true (df_farm_commit (f, NULL));
        g_autofree char *after = dump_db (fx->dir);
        g_assert_cmpstr (before, ==, after);
      }
}

/* ---- CHAP: one reader, secrets wiped ----------------------------------- */

/* df_farm_chap_get, df_farm_chap_find_user and the older
 * df_farm_device_chap read the same credentials, which the schema holds
 * (no column guessing); an unknown device has none for the older API. */
static void
test_chap_one_reader (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  g_autoptr (GError) err = NULL;
  add_vdisk (f, "base");
  add_device (f, "pc1", "52:54:00:00:00:01", "base", NULL, NULL);
  add_device (f, "pc2", "52:54:00:00:00:02", "base", NULL, NULL);
  g_assert_true (df_farm_chap_set (f, "pc1", "pc1-in", "Secret-1234567",
                                   "Mutual-7654321", &err));
  g_assert_no_error (err);

  g_autoptr (DfChap) byname = df_farm_chap_get (f, "PC1", &err);
  g_assert_no_error (err);
  g_autoptr (DfChap) bymac = df_farm_chap_get (f, "52:54:00:00:00:01", &err);
  g_autoptr (DfChap) byuser = df_farm_chap_find_user (f, "pc1-in", &err);
  g_assert_no_error (err);
  for (guint i = 0; i < 3; i++)
    {
      const DfChap *c = i == 0 ? byname : i == 1 ? bymac : byuser;
      g_assert_cmpstr (c->device, ==, "pc1");
      g_assert_cmpstr (c->user, ==, "pc1-in");
      g_assert_cmpstr (c->secret, ==, "Secret-1234567");
      g_assert_cmpstr (c->mutual_secret, ==, "Mutual-7654321");
      g_assert_cmpint (c->generation, ==, 1);
    }
  g_autofree char *user = NULL;
  g_autoptr (DfSecret) secret = NULL;
  g_assert_true (df_farm_device_chap (f, "pc1", &user, &secret, &err));
  g_assert_cmpstr (user, ==, "pc1-in");
  g_assert_cmpstr (secret, ==, "Secret-1234567");
  g_clear_pointer (&user, g_free);
  g_clear_pointer (&secret, df_secret_free);
  g_assert_true (df_farm_device_chap (f, "pc2", &user, &secret, &err));
  g_assert_null (user);
  g_assert_null (secret);
  g_assert_true (df_farm_device_chap (f, "nosuch", &user, &secret, &err));
  g_assert_no_error (err);
  g_assert_null (user);

  g_autoptr (GPtrArray) open = df_farm_chap_open_devices (f, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (open->len, ==, 1);
  g_assert_cmpstr (open->pdata[0], ==, "pc2");

  /* The user is unique; the refusal names it and changes nothing. */
  g_autofree char *before = dump_db (fx->dir);
  g_assert_false (df_farm_chap_set (f, "pc2", "pc1-in", "Other-secret-1",
                                    NULL, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_assert_nonnull (strstr (err->message, "pc1-in"));
  g_clear_error (&err);
  g_autofree char *after = dump_db (fx->dir);
  g_assert_cmpstr (before, ==, after);
  g_assert_false (df_farm_chap_set (f, "nosuch", "u", "Other-secret-1", NULL,
                                    &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  g_autoptr (DfChap) none = df_farm_chap_get (f, "nosuch", &err);
  g_assert_null (none);
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);

  /* Cleared: every reader sees none; the audit never holds a secret. */
  g_assert_true (df_farm_chap_set (f, "pc1", NULL, NULL, NULL, &err));
  g_autoptr (DfChap) cleared = df_farm_chap_get (f, "pc1", &err);
  g_assert_no_error (err);
  g_assert_null (cleared->user);
  g_assert_null (cleared->secret);
  g_assert_null (cleared->mutual_secret);
  g_autofree char *audit = raw_text (fx->dir,
    "SELECT group_concat (detail, ' ') FROM audit WHERE action = 'device.chap'");
  g_assert_nonnull (strstr (audit, "mutual"));
  g_assert_null (strstr (audit, "Secret-1234567"));
  g_assert_null (strstr (audit, "Mutual-7654321"));

  char buf[] = "Secret-1234567";
  df_secret_wipe (buf, sizeof buf - 1);
  for (gsize i = 0; i < sizeof buf; i++)
    g_assert_cmpint (buf[i], ==, 0);
}

/* ---- the backend seam (db.h) -------------------------------------------- */

/* A statement whose cached twin is in use (a re-entrant call) is a
 * private one: both step on their own; levels nest as savepoints and
 * roll back alone. */
static void
test_db_seam (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  add_vdisk (fx->farm, "a");
  add_vdisk (fx->farm, "b");
  g_autofree char *path = farm_db_target (fx->dir);
  g_autoptr (DfDb) db = df_db_open (path, false, &err);
  g_assert_no_error (err);
  const char *sql = "SELECT name FROM vdisks ORDER BY name";
  for (int round = 0; round < 2; round++)
    {
      g_autoptr (DfDbStmt) one = df_db_prepare (db, sql, &err);
      g_assert_no_error (err);
      g_assert_cmpint (df_db_step (one, &err), ==, 1);
      g_assert_cmpstr (df_db_col_text (one, 0), ==, "a");
      g_autoptr (DfDbStmt) two = df_db_prepare (db, sql, &err);
      g_assert_no_error (err);
      g_assert_true (one != two);
      g_assert_cmpint (df_db_step (two, &err), ==, 1);
      g_assert_cmpstr (df_db_col_text (two, 0), ==, "a");
      g_assert_cmpint (df_db_step (one, &err), ==, 1);
      g_assert_cmpstr (df_db_col_text (one, 0), ==, "b");
      g_assert_cmpint (df_db_step (one, &err), ==, 0);
      g_assert_cmpint (df_db_step (two, &err), ==, 1);
      g_assert_cmpstr (df_db_col_text (two, 0), ==, "b");
    }
  g_assert_null (df_db_prepare (db, "SELEC nothing", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_IO);
  g_assert_nonnull (strstr (err->message, "prepare"));
  g_clear_error (&err);

  g_assert_true (df_db_begin (db, &err));
  g_assert_true (df_db_exec (db, "INSERT INTO settings VALUES ('k1', 'v')",
                             "k1", &err));
  g_assert_true (df_db_begin (db, &err));
  g_assert_cmpuint (df_db_depth (db), ==, 2);
  g_assert_true (df_db_exec (db, "INSERT INTO settings VALUES ('k2', 'v')",
                             "k2", &err));
  df_db_rollback (db);
  /* A failed statement dooms its level on PostgreSQL (SQLite undoes the
   * statement only): there it fails in a level of its own. */
  bool pg = test_db_is_pg ();
  g_assert_true (!pg || df_db_begin (db, &err));
  g_assert_false (df_db_exec (db, "INSERT INTO settings VALUES ('k1', 'w')",
                              "k1 again", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_assert_nonnull (strstr (err->message, "k1 again"));
  g_clear_error (&err);
  if (pg)
    df_db_rollback (db);
  g_assert_true (df_db_commit (db, &err));
  g_assert_no_error (err);
  g_assert_cmpuint (df_db_depth (db), ==, 0);
  g_autofree char *keys = raw_text (fx->dir,
    "SELECT group_concat (key, ',') FROM settings WHERE key LIKE 'k_'");
  g_assert_cmpstr (keys, ==, "k1");
}

/* ---- audit ------------------------------------------------------------ */

static void
assert_json_object (const char *s)
{
  if (!s)
    return;
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) err = NULL;
  g_assert_true (json_parser_load_from_data (p, s, -1, &err));
  g_assert_no_error (err);
  g_assert_true (JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)));
}

static void
test_audit_rows (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  g_autoptr (GError) err = NULL;
  add_vdisk (f, "win11");
  add_version (f, "win11", 1, DF_VSTATE_TEST);
  g_assert_true (df_farm_version_set_state (f, "win11", 1,
                                            DF_VSTATE_PRODUCTION, &err));
  g_assert_true (df_farm_collection_add (f, "lab", "a \"quoted\"\n\tlab",
                                         NULL, &err));
  add_device (f, "pc1", "52:54:00:00:00:01", "win11", "lab", NULL);
  g_autoptr (DfDevice) d = df_farm_device_get (f, "pc1", &err);
  d->type = (g_free (d->type), g_strdup ("test"));
  g_assert_true (df_farm_device_update (f, d, &err));
  g_assert_true (df_farm_device_new_generation (f, "pc1", NULL, &err));
  g_assert_true (df_farm_device_remove (f, "pc1", &err));
  g_assert_true (df_farm_audit (f, "vdisk.export", "win11", "to /tmp/x",
                                &err));
  g_assert_true (df_farm_vdisk_remove (f, "win11", &err));
  g_assert_no_error (err);
  /* A failed call writes no audit row. */
  g_assert_false (df_farm_device_remove (f, "pc1", &err));
  g_clear_error (&err);

  static const struct { const char *action, *object, *in_detail; } want[] = {
    /* diskfarm init: the admin token, recorded without its value */
    { "setting.create-secret", DF_ADMIN_TOKEN_SETTING, "{}" },
    { "vdisk.add", "win11", "\"sha256\":\"" SHA_A "\"" },
    { "version.add", "win11@1", "\"state\":\"test\"" },
    { "version.state", "win11@1", "\"to\":\"production\"" },
    { "collection.add", "lab", "quoted" },
    { "device.add", "pc1", "\"mac\":\"52:54:00:00:00:01\"" },
    { "device.set", "pc1", "\"type\":{\"from\":\"production\",\"to\":\"test\"}" },
    { "device.reset", "pc1", "\"generation\":2" },
    { "device.remove", "pc1", NULL },
    { "vdisk.export", "win11", "to /tmp/x" },
    { "vdisk.remove", "win11", NULL },
  };
  g_autoptr (GPtrArray) all = df_farm_audit_list (f, 0, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (all->len, ==, G_N_ELEMENTS (want));
  for (guint i = 0; i < all->len; i++)
    {
      /* Newest first. */
      DfAudit *a = all->pdata[all->len - 1 - i];
      g_test_message ("%s %s %s %s %s", a->at, a->who, a->action, a->object,
                      a->detail ? a->detail : "");
      g_assert_cmpstr (a->action, ==, want[i].action);
      g_assert_cmpstr (a->object, ==, want[i].object);
      g_assert_cmpstr (a->who, ==, "test:unit");
      g_assert_true (is_iso_utc (a->at));
      if (want[i].in_detail)
        g_assert_nonnull (strstr (a->detail, want[i].in_detail));
      if (a->detail && a->detail[0] == '{')
        assert_json_object (a->detail);
    }
  g_autoptr (GPtrArray) two = df_farm_audit_list (f, 2, &err);
  g_assert_cmpuint (two->len, ==, 2);
  g_assert_cmpstr (((DfAudit *) two->pdata[0])->action, ==, "vdisk.remove");
}

/* ---- transactions ----------------------------------------------------- */

static void
test_transactions (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  g_autoptr (GError) err = NULL;
  add_vdisk (f, "base");
  g_autofree char *start = dump_db (fx->dir);

  /* Rollback undoes every mutator of the transaction. */
  g_assert_true (df_farm_begin (f, &err));
  add_vdisk (f, "v1");
  add_device (f, "pc1", "52:54:00:00:00:01", "v1", NULL, NULL);
  g_assert_true (df_farm_device_new_generation (f, "pc1", NULL, &err));
  df_farm_rollback (f);
  g_autofree char *after_rb = dump_db (fx->dir);
  g_assert_cmpstr (start, ==, after_rb);

  /* Nested: inner rollback drops only inner work; outer commit keeps. */
  g_assert_true (df_farm_begin (f, &err));
  add_vdisk (f, "outer");
  g_assert_true (df_farm_begin (f, &err));
  add_vdisk (f, "inner");
  /* Uncommitted work is visible to this handle, not to others. */
  g_autoptr (DfVdisk) seen = df_farm_vdisk_get (f, "inner", &err);
  g_assert_no_error (err);
  g_assert_cmpint (count_rows (fx->dir, "vdisks"), ==, 1);
  df_farm_rollback (f);
  g_assert_true (df_farm_begin (f, &err));
  add_vdisk (f, "inner2");
  g_assert_true (df_farm_commit (f, &err));
  g_assert_true (df_farm_commit (f, &err));
  g_assert_no_error (err);
  g_autoptr (GPtrArray) all = df_farm_vdisk_list (f, &err);
  g_assert_cmpuint (all->len, ==, 3);
  g_assert_cmpstr (((DfVdisk *) all->pdata[0])->name, ==, "base");
  g_assert_cmpstr (((DfVdisk *) all->pdata[1])->name, ==, "inner2");
  g_assert_cmpstr (((DfVdisk *) all->pdata[2])->name, ==, "outer");
  /* 3 vdisk.add rows + the admin token diskfarm init made */
  g_assert_cmpint (count_rows (fx->dir, "audit"), ==, 4);

  /* Committed data survives a reopen. */
  df_farm_close (fx->farm);
  fx->farm = open_ok (fx->dir, false);
  g_autoptr (DfVdisk) o = df_farm_vdisk_get (fx->farm, "outer", &err);
  g_assert_no_error (err);

  /* Closing with an open transaction rolls it back. */
  g_assert_true (df_farm_begin (fx->farm, &err));
  add_vdisk (fx->farm, "lost");
  df_farm_close (fx->farm);
  fx->farm = open_ok (fx->dir, false);
  g_assert_null (df_farm_vdisk_get (fx->farm, "lost", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
}

/* ---- version selection by device type --------------------------------- */

typedef struct {
  const char *label;
  /* states of versions 1..n after the production base 0; -1 ends */
  int states[6];
  bool base_to_test;       /* demote version 0 to test first */
  int want_production, want_test, want_maintenance;   /* -1: NOT_FOUND */
} ForTypeRow;

#define P DF_VSTATE_PRODUCTION
#define T DF_VSTATE_TEST
#define M DF_VSTATE_MAINTENANCE

static const ForTypeRow for_type_rows[] = {
  { "base only", { -1 }, false, 0, 0, 0 },
  { "test on top", { T, -1 }, false, 0, 1, 1 },
  { "mixed", { P, T, P, T, M, -1 }, false, 3, 4, 5 },
  { "maintenance only on top", { M, -1 }, false, 0, 0, 1 },
  { "maintenance below test", { P, M, -1 }, false, 1, 1, 2 },
  { "no production", { -1 }, true, -1, 0, 0 },
  { "nothing usable but maintenance", { M, -1 }, true, -1, 0, 1 },
};

static bool
devices_have (GPtrArray *devs, const char *name)
{
  for (guint i = 0; i < devs->len; i++)
    if (g_str_equal (devs->pdata[i], name))
      return true;
  return false;
}

/* A private image holds the version it is over: listed as its user (so
 * version delete refuses it), and not a user of the newest one. */
static void
test_version_devices_private (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  g_autoptr (GError) err = NULL;
  g_autofree char *dir = NULL;
  g_autoptr (GPtrArray) v0 = NULL;
  g_autoptr (GPtrArray) v1 = NULL;
  g_autoptr (GPtrArray) v1b = NULL;

  add_vdisk (f, "vd");
  add_version (f, "vd", 1, DF_VSTATE_PRODUCTION);
  add_device (f, "plain", "52:54:00:00:07:01", "vd", NULL, "production");
  add_device (f, "priv", "52:54:00:00:07:02", "vd", NULL, "production");
  g_autoptr (DfDevice) d = df_farm_device_get (f, "priv", &err);
  d->cache_mode = (g_free (d->cache_mode), g_strdup ("private"));
  g_assert_true (df_farm_device_update (f, d, &err));
  /* no image yet: it boots what its type selects */
  v1 = df_farm_version_devices (f, "vd", 1, &err);
  g_assert_no_error (err);
  g_assert_true (devices_have (v1, "plain") && devices_have (v1, "priv"));
  dir = df_farm_cache_dir (f, "priv");
  g_assert_true (df_cache_pin_write (
      dir, &(DfCachePin) { .vdisk = "vd", .version = 0 }, &err));
  g_assert_no_error (err);
  v0 = df_farm_version_devices (f, "vd", 0, &err);
  v1b = df_farm_version_devices (f, "vd", 1, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (v0->len, ==, 1);
  g_assert_true (devices_have (v0, "priv"));
  g_assert_true (devices_have (v1b, "plain") && !devices_have (v1b, "priv"));
}

static void
test_version_for_type (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  for (gsize i = 0; i < G_N_ELEMENTS (for_type_rows); i++)
    {
      const ForTypeRow *r = &for_type_rows[i];
      g_autoptr (GError) err = NULL;
      g_autofree char *vd = g_strdup_printf ("v%zu", i);
      g_test_message ("for_type: %s", r->label);
      add_vdisk (f, vd);
      if (r->base_to_test)
        g_assert_true (df_farm_version_set_state (f, vd, 0, T, &err));
      for (int n = 1; r->states[n - 1] >= 0; n++)
        add_version (f, vd, n, r->states[n - 1]);
      const char *types[] = { "production", "test", "maintenance" };
      int want[] = { r->want_production, r->want_test, r->want_maintenance };
      for (int t = 0; t < 3; t++)
        {
          g_autoptr (DfVersion) v = df_farm_version_for_type (f, vd, types[t],
                                                              &err);
          if (want[t] < 0)
            {
              g_assert_null (v);
              g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
              g_assert_nonnull (strstr (err->message, vd));
              g_clear_error (&err);
              continue;
            }
          g_assert_no_error (err);
          g_assert_nonnull (v);
          g_assert_cmpint (v->number, ==, want[t]);
          g_assert_cmpstr (v->vdisk, ==, vd);
        }
    }
  g_autoptr (GError) err = NULL;
  g_assert_null (df_farm_version_for_type (f, "v0", "prod", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_assert_null (df_farm_version_for_type (f, "nosuch", "test", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
}

/* ---- two handles (WAL) ------------------------------------------------ */

typedef struct {
  const char *dir;
  gint64 t_start, t_done;
  GError *err;
} Writer;

/* Runs in its own thread with its own DfFarm: blocks on the other
 * handle's write transaction (busy_timeout), then succeeds. */
static gpointer
writer_thread (gpointer data)
{
  Writer *w = data;
  DfFarm *f = test_farm_open (w->dir, false, "test:writer", &w->err);
  if (!f)
    return NULL;
  w->t_start = g_get_monotonic_time ();
  df_farm_vdisk_add (f, "from-thread", 1 << 20, "t.0.qcow2", SHA_A, 1,
                     &w->err);
  w->t_done = g_get_monotonic_time ();
  df_farm_close (f);
  return NULL;
}

static void
test_two_handles (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfFarm *a = fx->farm;
  DfFarm *b = open_ok (fx->dir, false);
  add_vdisk (a, "base");

  /* A writes inside an open transaction; B reads the committed state
   * without blocking, then sees A's work after the commit. */
  g_assert_true (df_farm_begin (a, &err));
  add_device (a, "pc1", "52:54:00:00:00:01", "base", NULL, NULL);
  gint64 t0 = g_get_monotonic_time ();
  g_assert_null (df_farm_device_get (b, "pc1", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  g_autoptr (GPtrArray) vl = df_farm_vdisk_list (b, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (vl->len, ==, 1);
  g_assert_cmpint (g_get_monotonic_time () - t0, <, G_USEC_PER_SEC);
  g_assert_true (df_farm_commit (a, &err));
  g_autoptr (DfDevice) d = df_farm_device_get (b, "52:54:00:00:00:01", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (d->name, ==, "pc1");

  /* B writes, A sees it. */
  g_assert_true (df_farm_device_new_generation (b, "pc1", NULL, &err));
  g_autoptr (DfDevice) d2 = df_farm_device_get (a, "pc1", &err);
  g_assert_cmpint (d2->generation, ==, 2);

  /* A third handle in another thread waits for A's write transaction
   * (busy timeout) instead of failing, then commits. */
  g_assert_true (df_farm_begin (a, &err));
  add_vdisk (a, "held");
  Writer w = { .dir = fx->dir };
  GThread *th = g_thread_new ("writer", writer_thread, &w);
  g_usleep (300 * 1000);
  g_assert_true (df_farm_commit (a, &err));
  gint64 t_commit = g_get_monotonic_time ();
  g_thread_join (th);
  g_assert_no_error (w.err);
  /* SQLite's writer waited for A's lock; PostgreSQL's did not need to
   * (other rows; a serialization conflict would have been re-run). */
  if (!test_db_is_pg ())
    g_assert_cmpint (w.t_done, >=, t_commit - 50 * 1000);
  g_autoptr (DfVdisk) ft = df_farm_vdisk_get (b, "from-thread", &err);
  g_assert_no_error (err);
  g_autoptr (GPtrArray) audit = df_farm_audit_list (b, 1, &err);
  g_assert_cmpstr (((DfAudit *) audit->pdata[0])->who, ==, "test:writer");
  df_farm_close (b);
}


/* ---- farm identity, maintenance device rule (migration 4) ------------ */

static bool
is_uuid_v4 (const char *s)
{
  return s && g_regex_match_simple (
    "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
    s, 0, 0);
}

/* A farm DB at schema 3 (before migration 4) in dir. */
static void
make_schema3_farm (const char *dir)
{
  g_assert_cmpint (g_mkdir_with_parents (dir, 0750), ==, 0);
  g_autofree char *path = g_build_filename (dir, "farm.db", NULL);
  DfDb *db = df_db_open (path, true, NULL);
  g_assert_nonnull (db);
  int version = -1;
  g_autoptr (GError) err = NULL;
  g_assert_cmpuint (df_farm_n_migrations, >=, 4);
  g_assert_true (df_farm_migrate (db, df_farm_migrations, 3, &version, &err));
  g_assert_no_error (err);
  g_assert_cmpint (version, ==, 3);
  df_db_close (db);
}

static void
test_uuid (void)
{
  SQLITE_ONLY ();
  g_autofree char *tmp = tu_tmpdir ();
  g_autofree char *a = g_build_filename (tmp, "a", NULL);
  g_autofree char *b = g_build_filename (tmp, "b", NULL);
  g_autofree char *old = g_build_filename (tmp, "old", NULL);

  DfFarm *fa = open_ok (a, true);
  g_autofree char *ua = g_strdup (df_farm_uuid (fa));
  g_assert_true (is_uuid_v4 (ua));
  df_farm_close (fa);
  fa = open_ok (a, false);          /* stable across opens */
  g_assert_cmpstr (df_farm_uuid (fa), ==, ua);
  df_farm_close (fa);
  DfFarm *fb = open_ok (b, true);   /* another farm, another identity */
  g_assert_true (is_uuid_v4 (df_farm_uuid (fb)));
  g_assert_cmpstr (df_farm_uuid (fb), !=, ua);
  df_farm_close (fb);

  /* An existing farm gets its identity from the migration, and keeps
   * farms of schema 3 that break the maintenance rule openable. */
  make_schema3_farm (old);
  raw_exec (old,
    "INSERT INTO vdisks (name, virtual_size, created) VALUES ('v', 1, 'x');"
    "INSERT INTO devices (name, mac, type, vdisk_id, created) VALUES "
    "('m1', '52:54:00:00:00:01', 'maintenance', 1, 'x'),"
    "('m2', '52:54:00:00:00:02', 'maintenance', 1, 'x');");
  g_autofree char *none = raw_text (old, "SELECT count(*) FROM sqlite_master "
                                         "WHERE name = 'farm_identity'");
  g_assert_cmpstr (none, ==, "0");
  DfFarm *fo = open_ok (old, false);
  g_assert_cmpint (df_farm_schema_version (fo), ==, df_farm_n_migrations);
  g_assert_true (is_uuid_v4 (df_farm_uuid (fo)));
  g_assert_cmpstr (df_farm_uuid (fo), !=, ua);
  /* The legacy pair still changes in other ways. */
  g_autoptr (GError) err = NULL;
  g_autoptr (DfDevice) m2 = df_farm_device_get (fo, "m2", &err);
  g_assert_no_error (err);
  g_free (m2->cache_mode);
  m2->cache_mode = g_strdup ("ram:64");
  g_assert_true (df_farm_device_update (fo, m2, &err));
  g_assert_no_error (err);
  df_farm_close (fo);
  g_autofree char *uo = raw_text (old, "SELECT uuid FROM farm_identity");
  g_assert_true (is_uuid_v4 (uo));

  /* A farm DB whose identity row was lost is refused, not given a new one. */
  raw_exec (old, "DELETE FROM farm_identity");
  DfFarm *fl = test_farm_open (old, false, "t", &err);
  g_assert_null (fl);
  g_assert_error (err, DF_ERROR, DF_ERROR_CORRUPT);
  g_assert_nonnull (strstr (err->message, "identity"));
  tu_rmrf (tmp);
}

static void
assert_maintenance_refused (GError *err, const char *vdisk, const char *dev)
{
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_autofree char *want = g_strdup_printf (
    "vdisk '%s' already has maintenance device '%s'", vdisk, dev);
  g_assert_nonnull (strstr (err->message, want));
}

static void
test_one_maintenance (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  g_autoptr (GError) err = NULL;
  add_vdisk (f, "win11");
  add_vdisk (f, "alpine");
  add_device (f, "m1", "52:54:00:00:01:01", "win11", NULL, "maintenance");
  add_device (f, "t1", "52:54:00:00:01:02", "win11", NULL, "test");
  add_device (f, "m9", "52:54:00:00:01:09", "alpine", NULL, "maintenance");
  g_autofree char *before = dump_db (fx->dir);

  /* add */
  DfDevice d = { .name = "m2", .mac = "52:54:00:00:01:03", .vdisk = "win11",
                 .type = "maintenance" };
  g_assert_false (df_farm_device_add (f, &d, &err));
  assert_maintenance_refused (err, "win11", "m1");
  g_clear_error (&err);
  /* set --type maintenance */
  g_autoptr (DfDevice) t1 = df_farm_device_get (f, "t1", &err);
  g_free (t1->type);
  t1->type = g_strdup ("maintenance");
  g_assert_false (df_farm_device_update (f, t1, &err));
  assert_maintenance_refused (err, "win11", "m1");
  g_clear_error (&err);
  /* --vdisk of a maintenance device onto a vdisk that has one */
  g_autoptr (DfDevice) m9 = df_farm_device_get (f, "m9", &err);
  g_free (m9->vdisk);
  m9->vdisk = g_strdup ("win11");
  g_assert_false (df_farm_device_update (f, m9, &err));
  assert_maintenance_refused (err, "win11", "m1");
  g_clear_error (&err);
  g_autofree char *after = dump_db (fx->dir);
  g_assert_cmpstr (after, ==, before);

  /* The maintenance device itself may change; once it is no longer one,
   * another device may take the role. */
  g_autoptr (DfDevice) m1 = df_farm_device_get (f, "m1", &err);
  g_free (m1->cache_mode);
  m1->cache_mode = g_strdup ("ram:64");
  g_assert_true (df_farm_device_update (f, m1, &err));
  g_assert_no_error (err);
  g_free (m1->type);
  m1->type = g_strdup ("test");
  g_assert_true (df_farm_device_update (f, m1, &err));
  g_assert_no_error (err);
  g_assert_true (df_farm_device_update (f, t1, &err));
  g_assert_no_error (err);

  /* The schema refuses a second one too (the library's backstop: SQLite's
   * triggers, PostgreSQL's plpgsql ones). */
  g_autofree char *path = farm_db_target (fx->dir);
  g_autoptr (DfDb) db = df_db_open (path, false, &err);
  g_assert_no_error (err);
  g_assert_false (df_db_exec (db,
    "INSERT INTO devices (name, mac, type, vdisk_id, created) SELECT 'raw', "
    "'52:54:00:00:01:0a', 'maintenance', id, 'x' FROM vdisks "
    "WHERE name = 'win11'", "raw insert", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_nonnull (strstr (err->message, "one maintenance device"));
  g_clear_error (&err);
  g_assert_false (df_db_exec (db, "UPDATE devices SET type = 'maintenance' "
                              "WHERE name = 'm1'", "raw update", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
}

/* A new maintenance version starts the maintenance device's next boot
 * generation in the same transaction; other devices keep theirs. */
static void
test_version_new_generation (Fixture *fx, gconstpointer data)
{
  DfFarm *f = fx->farm;
  g_autoptr (GError) err = NULL;
  add_vdisk (f, "win11");
  add_vdisk (f, "alpine");
  add_device (f, "m1", "52:54:00:00:02:01", "win11", NULL, "maintenance");
  add_device (f, "p1", "52:54:00:00:02:02", "win11", NULL, "production");
  add_device (f, "m2", "52:54:00:00:02:03", "alpine", NULL, "maintenance");
  add_version (f, "win11", 1, DF_VSTATE_MAINTENANCE);
  g_autoptr (DfDevice) m1 = df_farm_device_get (f, "m1", &err);
  g_autoptr (DfDevice) p1 = df_farm_device_get (f, "p1", &err);
  g_autoptr (DfDevice) m2 = df_farm_device_get (f, "m2", &err);
  g_assert_cmpint (m1->generation, ==, 2);
  g_assert_cmpint (p1->generation, ==, 1);
  g_assert_cmpint (m2->generation, ==, 1);
  g_autoptr (GPtrArray) audit = df_farm_audit_list (f, 2, &err);
  DfAudit *last = audit->pdata[0];
  g_assert_cmpstr (last->action, ==, "device.generation");
  g_assert_cmpstr (last->object, ==, "m1");
  g_assert_cmpstr (last->detail, ==,
                   "{\"generation\":2,\"cause\":\"win11@1\"}");
  g_assert_cmpstr (((DfAudit *) audit->pdata[1])->action, ==, "version.add");

  /* A sealed version does not touch generations. */
  g_assert_true (df_farm_version_seal (f, "win11", 1, SHA_B, 8192, &err));
  g_assert_no_error (err);
  add_version (f, "win11", 2, DF_VSTATE_TEST);
  g_autoptr (DfDevice) again = df_farm_device_get (f, "m1", &err);
  g_assert_cmpint (again->generation, ==, 2);

  /* All or nothing: a refused version leaves the generation alone. */
  g_autofree char *before = dump_db (fx->dir);
  g_assert_false (df_farm_version_add (f, "win11", 2, 1, "win11.2b.qcow2",
                                       NULL, 1 << 30, 0,
                                       DF_VSTATE_MAINTENANCE, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_clear_error (&err);
  g_autofree char *after = dump_db (fx->dir);
  g_assert_cmpstr (after, ==, before);
}

/* ---- issue 9: changing what exists ------------------------------------ */

static void
test_auto_merge_depth (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfFarm *f = fx->farm;
  add_vdisk (f, "a");
  bool own = true;
  g_assert_cmpint (df_farm_auto_merge_depth (f, "a", &own), ==, 0);
  g_assert_false (own);
  g_assert_true (df_farm_auto_merge_depth_set (f, NULL, 5, &err));
  g_assert_cmpint (df_farm_auto_merge_depth (f, "a", &own), ==, 5);
  g_assert_false (own);
  g_assert_true (df_farm_auto_merge_depth_set (f, "a", 0, &err));
  g_assert_cmpint (df_farm_auto_merge_depth (f, "a", &own), ==, 0);
  g_assert_true (own);
  g_assert_true (df_farm_auto_merge_depth_set (f, "a", -1, &err));
  g_assert_cmpint (df_farm_auto_merge_depth (f, "a", &own), ==, 5);
  const int bad[] = { 1, 257, -3 };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_assert_false (df_farm_auto_merge_depth_set (f, NULL, bad[i], &err));
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_clear_error (&err);
    }
  g_assert_false (df_farm_auto_merge_depth_set (f, "nosuch", 3, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  /* a malformed stored value counts as off */
  g_assert_true (df_farm_setting_set (f, "auto_merge_depth", "x", &err));
  g_assert_cmpint (df_farm_auto_merge_depth (f, NULL, NULL), ==, 0);
}

static void
test_collection_set_remove (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfFarm *f = fx->farm;
  add_vdisk (f, "a");
  add_vdisk (f, "b");
  g_assert_true (df_farm_collection_add (f, "lab", "x", "a", &err));
  g_assert_true (df_farm_collection_add (f, "other", NULL, NULL, &err));
  add_device (f, "pc1", "52:54:00:00:00:01", "a", "lab", NULL);
  g_assert_true (df_farm_collection_set (f, "lab", "lab2", "", "b", &err));
  g_assert_no_error (err);
  g_autoptr (DfCollection) c = df_farm_collection_get (f, "lab2", &err);
  g_assert_nonnull (c);
  g_assert_null (c->description);
  g_assert_cmpstr (c->vdisk, ==, "b");
  g_autoptr (DfDevice) d = df_farm_device_get (f, "pc1", &err);
  g_assert_cmpstr (d->collection, ==, "lab2");
  g_assert_false (df_farm_collection_set (f, "lab2", "other", NULL, NULL,
                                          &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_clear_error (&err);
  g_assert_false (df_farm_collection_remove (f, "lab2", false, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_assert_nonnull (strstr (err->message, "pc1"));
  g_clear_error (&err);
  g_assert_true (df_farm_collection_remove (f, "lab2", true, &err));
  g_autoptr (DfDevice) d2 = df_farm_device_get (f, "pc1", &err);
  g_assert_null (d2->collection);
  g_assert_false (df_farm_collection_remove (f, "lab2", true, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
}

static void
test_audit_query (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfFarm *f = fx->farm;
  add_vdisk (f, "a");
  add_vdisk (f, "ab");
  add_version (f, "a", 1, DF_VSTATE_TEST);
  add_device (f, "pc1", "52:54:00:00:00:01", "a", NULL, NULL);
  DfAuditFilter byobj = { .object = "a" };
  g_autoptr (GPtrArray) o = df_farm_audit_query (f, &byobj, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (o->len, ==, 2);   /* vdisk.add a, version.add a@1 */
  for (guint i = 0; i < o->len; i++)
    g_assert_true (g_str_has_prefix (((DfAudit *) o->pdata[i])->object, "a"));
  DfAuditFilter fam = { .action = "vdisk" };
  g_autoptr (GPtrArray) v = df_farm_audit_query (f, &fam, &err);
  g_assert_cmpuint (v->len, ==, 2);
  DfAuditFilter exact = { .action = "device.add", .limit = 5 };
  g_autoptr (GPtrArray) e = df_farm_audit_query (f, &exact, &err);
  g_assert_cmpuint (e->len, ==, 1);
  DfAuditFilter future = { .since = "2999-01-01T00:00:00Z" };
  g_autoptr (GPtrArray) none = df_farm_audit_query (f, &future, &err);
  g_assert_cmpuint (none->len, ==, 0);
  DfAuditFilter bad = { .since = "yesterday" };
  g_assert_null (df_farm_audit_query (f, &bad, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
}

static void
test_vdisk_rename (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfFarm *f = fx->farm;
  add_vdisk (f, "a");
  add_version (f, "a", 1, DF_VSTATE_TEST);
  add_device (f, "pc1", "52:54:00:00:00:01", "a", NULL, NULL);
  g_assert_true (df_farm_auto_merge_depth_set (f, "a", 3, &err));
  g_autofree char *store = df_farm_store_dir (f, "a");
  g_autofree char *v1 = df_farm_version_path (f, "a", 1);
  g_assert_true (df_farm_vdisk_rename (f, "a", "b", &err));
  g_assert_no_error (err);
  g_autofree char *store_b = df_farm_store_dir (f, "b");
  g_autofree char *v1_b = df_farm_version_path (f, "b", 1);
  g_assert_cmpstr (store_b, ==, store);
  g_assert_cmpstr (v1_b, ==, v1);
  g_autoptr (DfDevice) d = df_farm_device_get (f, "pc1", &err);
  g_assert_cmpstr (d->vdisk, ==, "b");
  g_assert_cmpint (df_farm_auto_merge_depth (f, "b", NULL), ==, 3);
  /* a new "a" gets another directory; "a" as a name is free again */
  g_autofree char *next = df_farm_store_dir (f, "a");
  g_assert_true (g_str_has_suffix (next, "/store/a~2"));
  add_vdisk (f, "a");
  g_autofree char *again = df_farm_store_dir (f, "a");
  g_assert_cmpstr (again, ==, next);
  g_assert_false (df_farm_vdisk_rename (f, "b", "a", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_clear_error (&err);
  add_version (f, "b", 2, DF_VSTATE_MAINTENANCE);
  g_assert_false (df_farm_vdisk_rename (f, "b", "c", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
}

/* ---- writers racing from several processes ---------------------------- */

#define RACE_WRITERS 2
#define RACE_BUMPS 40
#define RACE_MACS 8

/* One racing writer (a forked process with its own connection): bumps
 * pc1's generation RACE_BUMPS times and auto-adds RACE_MACS MACs, writing
 * each generation it got to fd; exit 0 when every call succeeded (an
 * auto-add of a MAC the other writer added first may fail EXISTS). */
static int
race_writer (const char *dir, int fd)
{
  g_autoptr (GError) err = NULL;
  DfFarm *f = test_farm_open (dir, false, "test:race", &err);
  if (!f)
    return 2;
  for (int i = 0; i < RACE_BUMPS; i++)
    {
      gint64 gen = 0;
      if (!df_farm_device_new_generation (f, "pc1", &gen, &err))
        {
          g_printerr ("race: bump: %s\n", err->message);
          return 3;
        }
      if (write (fd, &gen, sizeof gen) != sizeof gen)
        return 4;
      if (i < RACE_MACS)
        {
          g_autofree char *mac = g_strdup_printf ("52:54:00:aa:00:%02x", i);
          g_autofree char *name = NULL;
          if (!df_farm_auto_add_device (f, mac, &name, &err)
              && !g_error_matches (err, DF_ERROR, DF_ERROR_EXISTS))
            {
              g_printerr ("race: auto-add %s: %s\n", mac, err->message);
              return 5;
            }
          g_clear_error (&err);
        }
    }
  df_farm_close (f);
  return 0;
}

/* Generation bumps and auto-adds from several processes at once lose
 * nothing: every bump gets its own generation and its audit row, every
 * MAC ends as one device.  On PostgreSQL the writers meet serialization
 * failures and df_farm_try re-runs them; on SQLite they queue. */
static void
test_race_writers (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfFarm *f = fx->farm;
  add_vdisk (f, "base");
  g_assert_true (df_farm_collection_add (f, "auto", NULL, "base", &err));
  g_assert_no_error (err);
  add_device (f, "pc1", "52:54:00:00:00:01", "base", NULL, NULL);
  DfAutoAdd a = { .enabled = true, .collection = (char *) "auto",
                  .name_template = (char *) DF_AUTO_ADD_TEMPLATE };
  g_assert_true (df_farm_auto_add_set (f, &a, &err));
  g_assert_no_error (err);

  int fds[2];
  g_assert_cmpint (pipe (fds), ==, 0);
  gint64 t0 = g_get_monotonic_time ();
  pid_t pids[RACE_WRITERS];
  for (int w = 0; w < RACE_WRITERS; w++)
    {
      pids[w] = fork ();
      g_assert_cmpint (pids[w], >=, 0);
      if (pids[w] == 0)
        {
          close (fds[0]);
          _exit (race_writer (fx->dir, fds[1]));
        }
    }
  close (fds[1]);
  g_autoptr (GHashTable) seen = g_hash_table_new_full (g_int64_hash,
                                                       g_int64_equal,
                                                       g_free, NULL);
  gint64 gen;
  while (read (fds[0], &gen, sizeof gen) == sizeof gen)
    {
      g_assert_false (g_hash_table_contains (seen, &gen));
      g_hash_table_add (seen, g_memdup2 (&gen, sizeof gen));
    }
  close (fds[0]);
  for (int w = 0; w < RACE_WRITERS; w++)
    {
      int status = 0;
      g_assert_cmpint (waitpid (pids[w], &status, 0), ==, pids[w]);
      g_assert_true (WIFEXITED (status));
      g_assert_cmpint (WEXITSTATUS (status), ==, 0);
    }
  g_test_message ("race: %d writers x %d bumps in %.2f s",
                  RACE_WRITERS, RACE_BUMPS,
                  (g_get_monotonic_time () - t0) / 1e6);
  g_assert_cmpuint (g_hash_table_size (seen), ==, RACE_WRITERS * RACE_BUMPS);
  g_autoptr (DfDevice) d = df_farm_device_get (f, "pc1", &err);
  g_assert_no_error (err);
  g_assert_cmpint (d->generation, ==, 1 + RACE_WRITERS * RACE_BUMPS);
  g_assert_cmpint (count_rows (fx->dir, "audit WHERE action = 'device.reset'"),
                   ==, RACE_WRITERS * RACE_BUMPS);
  g_autoptr (GPtrArray) added = df_farm_device_list (f, "auto", &err);
  g_assert_no_error (err);
  g_assert_cmpuint (added->len, ==, RACE_MACS);
}

/* A PostgreSQL target's password is never shown: not by the redacted
 * form (config show, messages), not by a failed connection's error. */
static void
test_db_secret_hidden (void)
{
  static const char *const targets[] = {
    /* UNIX sockets only: nothing leaves the machine, not even DNS */
    "postgresql://farm:s3cretpw@%2Fnonexistent%2Fsock:5433/farm?sslmode=disable",
    "postgresql:///farm?host=/nonexistent/sock&user=farm&password=s3cretpw",
    "host=/nonexistent/sock dbname=farm user=farm password=s3cretpw",
    "host=/nonexistent/sock password='s3cretpw x' dbname=farm",
  };
  for (gsize i = 0; i < G_N_ELEMENTS (targets); i++)
    {
      g_assert_true (df_farm_db_is_remote (targets[i]));
      g_autofree char *shown = df_farm_db_redact (targets[i]);
      g_test_message ("%s -> %s", targets[i], shown);
      g_assert_null (strstr (shown, "s3cretpw"));
      g_assert_nonnull (strstr (shown, "dbname=farm"));
      g_autoptr (GError) err = NULL;
      g_autofree char *tmp = tu_tmpdir ();
      g_assert_null (df_farm_open_db (tmp, targets[i], false, "t", &err));
      g_assert_nonnull (err);
      g_test_message ("  open: %s", err->message);
      g_assert_null (strstr (err->message, "s3cretpw"));
      g_assert_cmpint (g_rmdir (tmp), ==, 0);
    }
  g_autofree char *bad = df_farm_db_redact ("host='unterminated password=s3cretpw");
  g_assert_null (strstr (bad, "s3cretpw"));
  g_assert_false (df_farm_db_is_remote ("/srv/farm/farm.db"));
  g_autofree char *path = df_farm_db_redact ("/srv/farm/farm.db");
  g_assert_cmpstr (path, ==, "/srv/farm/farm.db");
}

int
main (int argc, char **argv)
{
  test_db_init ();
  umask (022);
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/farm/open-create", test_open_create);
  g_test_add_func ("/farm/migrations-idempotent", test_migrations_idempotent);
  g_test_add_func ("/farm/newer-schema-refused", test_newer_refused);
  g_test_add_func ("/farm/not-a-farm", test_not_a_farm);
  g_test_add_func ("/farm/open-empty-dir", test_open_empty_dir);
  g_test_add_func ("/farm/uuid", test_uuid);
#define FX(path, fn) \
  g_test_add (path, Fixture, NULL, fx_setup, fn, fx_teardown)
  FX ("/farm/vdisks-versions", test_vdisks_versions);
  FX ("/farm/vdisk-firmware", test_vdisk_firmware);
  FX ("/farm/collections-devices", test_collections_devices);
  FX ("/farm/race-writers", test_race_writers);
  g_test_add_func ("/farm/db-secret-hidden", test_db_secret_hidden);
  FX ("/farm/bad-inputs", test_bad_inputs);
  FX ("/farm/cache-modes-one-grammar", test_cache_modes_one_grammar);
  FX ("/farm/device-names-nocase", test_device_names_nocase);
  FX ("/farm/bad-inputs-nested", test_bad_inputs_nested);
  FX ("/farm/failure-after-write", test_failure_after_write);
  FX ("/farm/audit", test_audit_rows);
  FX ("/farm/transactions", test_transactions);
  FX ("/farm/version-for-type", test_version_for_type);
  FX ("/farm/two-handles", test_two_handles);
  FX ("/farm/one-maintenance-device", test_one_maintenance);
  FX ("/farm/version-new-generation", test_version_new_generation);
  FX ("/farm/auto-merge-depth", test_auto_merge_depth);
  FX ("/farm/collection-set-remove", test_collection_set_remove);
  FX ("/farm/audit-query", test_audit_query);
  FX ("/farm/vdisk-rename", test_vdisk_rename);
  FX ("/farm/version-devices-private", test_version_devices_private);
  FX ("/farm/chap-one-reader", test_chap_one_reader);
  FX ("/farm/db-seam", test_db_seam);
  return g_test_run ();
}
