/* Unit tests for lib/farm's server registry and store state (registry.c):
 * registration fills the admin's row, heartbeats, the state from the
 * timeout, bad registrations change nothing, store-state upserts, the
 * placement rule (df_farm_store_holds), PVS's pending rule, verification
 * of a real file, and rows going with their server or version; cache
 * leases (leases.c): shared take/renew/takeover/release, local claims;
 * floating portals (portal.c): the address check, the portal kept across
 * registrations, VRRP priorities and the keepalived.conf. */
#include "farm.h"
#include "common.h"
#include "test-db.h"
#include "test-util.h"

#include <glib/gstdio.h>
#include <string.h>

#define SHA_A TEST_FARM_SHA

typedef TestFarm Fixture;

/* A registration of name as a streamsvc at 127.0.0.1 (strings static). */
static DfServer
self_of (const char *name, int power)
{
  DfServer s = { .name = (char *) name, .address = (char *) "127.0.0.1",
                 .iscsi_port = 3260, .nbd_port = 10809, .admin_port = 8001,
                 .power = power, .kind = (char *) DF_SERVER_KIND_STREAM,
                 .timeout_ms = 6000, .software = (char *) "test" };
  return s;
}

static void
register_ok (DfFarm *f, const char *name, int power)
{
  g_autoptr (GError) err = NULL;
  DfServer s = self_of (name, power);
  g_assert_true (df_farm_server_register (f, &s, &err));
  g_assert_no_error (err);
}

static guint
audit_count (DfFarm *f, const char *action)
{
  g_autoptr (GError) err = NULL;
  DfAuditFilter flt = { .action = action };
  g_autoptr (GPtrArray) rows = df_farm_audit_query (f, &flt, &err);
  g_assert_no_error (err);
  return rows->len;
}

/* ---- registry ----------------------------------------------------------- */

static void
test_register_fills_admin_row (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfServer added = { .name = (char *) "ss1", .address = (char *) "10.0.0.9",
                     .iscsi_port = 3260, .nbd_port = 10809,
                     .admin_port = 8001, .power = 1 };
  g_assert_true (df_farm_server_add (fx->farm, &added, &err));
  g_autoptr (DfServer) before = df_farm_server_get (fx->farm, "ss1", &err);
  g_assert_cmpstr (before->kind, ==, DF_SERVER_KIND_STREAM);
  g_assert_cmpint (df_server_state (before, df_farm_now_ms ()), ==,
                   DF_SERVER_NEVER_SEEN);

  register_ok (fx->farm, "ss1", 3);
  g_autoptr (DfServer) after = df_farm_server_get (fx->farm, "ss1", &err);
  g_assert_no_error (err);
  g_assert_cmpint (after->id, ==, before->id); /* the same row */
  g_assert_cmpstr (after->address, ==, "127.0.0.1");
  g_assert_cmpint (after->power, ==, 3);
  g_assert_cmpint (after->timeout_ms, ==, 6000);
  g_assert_cmpstr (after->software, ==, "test");
  g_assert_cmpint (after->registered_ms, >, 0);
  g_assert_cmpint (df_server_state (after, df_farm_now_ms ()), ==,
                   DF_SERVER_HEALTHY);
  g_assert_cmpuint (audit_count (fx->farm, "server.register"), ==, 1);
  /* the same registration again (a restart): no new audit row */
  register_ok (fx->farm, "ss1", 3);
  g_assert_cmpuint (audit_count (fx->farm, "server.register"), ==, 1);
  /* a new server: a new row, audited */
  register_ok (fx->farm, "ss2", 1);
  g_autoptr (GPtrArray) all = df_farm_server_list (fx->farm, &err);
  g_assert_cmpuint (all->len, ==, 2);
  g_assert_cmpuint (audit_count (fx->farm, "server.register"), ==, 2);
}

static void
test_heartbeat_and_state (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  register_ok (fx->farm, "ss1", 2);
  gint64 now = df_farm_now_ms ();
  DfServerLoad l = { .sessions = 5, .bytes_per_s = 1000, .cpu_permille = 250,
                     .free_bytes = 1 << 30, .versions_held = 2,
                     .versions_verified = 1 };
  g_assert_true (df_farm_server_heartbeat (fx->farm, "ss1", now, &l, &err));
  g_assert_no_error (err);
  g_autoptr (DfServer) s = df_farm_server_get (fx->farm, "ss1", &err);
  g_assert_cmpint (s->heartbeat_ms, ==, now);
  g_assert_cmpint (s->load.sessions, ==, 5);
  g_assert_cmpint (s->load.bytes_per_s, ==, 1000);
  g_assert_cmpint (s->load.cpu_permille, ==, 250);
  g_assert_cmpint (s->load.free_bytes, ==, 1 << 30);
  /* the counts are the store state's, not what the load said */
  g_assert_cmpint (s->load.versions_held, ==, 0);
  g_assert_cmpint (s->load.versions_verified, ==, 0);
  g_assert_true (df_farm_store_state_set (fx->farm, "ss1", "base", 0,
                                          DF_STORE_VERIFIED, SHA_A, NULL,
                                          &err));
  g_assert_true (df_farm_server_heartbeat (fx->farm, "ss1", now, &l, &err));
  g_autoptr (DfServer) s2 = df_farm_server_get (fx->farm, "ss1", &err);
  g_assert_cmpint (s2->load.versions_held, ==, 1);
  g_assert_cmpint (s2->load.versions_verified, ==, 1);
  /* the state from the server's own timeout (6000 ms) */
  g_assert_cmpint (df_server_state (s, now), ==, DF_SERVER_HEALTHY);
  g_assert_cmpint (df_server_state (s, now + 6000), ==, DF_SERVER_HEALTHY);
  g_assert_cmpint (df_server_state (s, now + 6001), ==, DF_SERVER_UNHEALTHY);
  g_assert_cmpstr (df_server_state_name (DF_SERVER_UNHEALTHY), ==,
                   "unhealthy");
  g_assert_cmpstr (df_server_state_name (DF_SERVER_NEVER_SEEN), ==,
                   "never-seen");
  /* a removed row: NOT_FOUND, so the server registers again */
  g_assert_true (df_farm_server_remove (fx->farm, "ss1", &err));
  g_assert_false (df_farm_server_heartbeat (fx->farm, "ss1", now, &l, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
}

static void
test_bad_registration (Fixture *fx, gconstpointer data)
{
  static const struct {
    const char *name, *address, *kind;
    int power;
    gint64 timeout;
  } cases[] = {
    { "bad name", "127.0.0.1", DF_SERVER_KIND_STREAM, 1, 6000 },
    { "ss1", "", DF_SERVER_KIND_STREAM, 1, 6000 },
    { "ss1", "a b", DF_SERVER_KIND_STREAM, 1, 6000 },
    { "ss1", "127.0.0.1", "nfs", 1, 6000 },
    { "ss1", "127.0.0.1", NULL, 1, 6000 },
    { "ss1", "127.0.0.1", DF_SERVER_KIND_STREAM, 0, 6000 },
    { "ss1", "127.0.0.1", DF_SERVER_KIND_STREAM, 1001, 6000 },
    { "ss1", "127.0.0.1", DF_SERVER_KIND_STREAM, 1, 0 },
    { "ss1", "127.0.0.1", DF_SERVER_KIND_STREAM, 1, 86400001 },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) err = NULL;
      DfServer s = self_of (cases[i].name, cases[i].power);
      s.address = (char *) cases[i].address;
      s.kind = (char *) cases[i].kind;
      s.timeout_ms = cases[i].timeout;
      g_assert_false (df_farm_server_register (fx->farm, &s, &err));
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
    }
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) all = df_farm_server_list (fx->farm, &err);
  g_assert_cmpuint (all->len, ==, 0);
  g_assert_cmpuint (audit_count (fx->farm, "server.register"), ==, 0);
  /* a bootstrapsvc cannot take a stream server's row */
  register_ok (fx->farm, "ss1", 1);
  DfServer b = self_of ("ss1", 1);
  b.kind = (char *) DF_SERVER_KIND_BOOTSTRAP;
  g_assert_false (df_farm_server_register (fx->farm, &b, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_EXISTS);
  g_autoptr (DfServer) s = df_farm_server_get (fx->farm, "ss1", NULL);
  g_assert_cmpstr (s->kind, ==, DF_SERVER_KIND_STREAM);
}

/* ---- store state ---------------------------------------------------------- */

static void
test_store_state (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  bool holds = false;
  register_ok (fx->farm, "ss1", 1);
  register_ok (fx->farm, "ss2", 1);
  /* no record in the farm: every server holds every version (one-server
   * farms as before the registry) */
  g_assert_true (df_farm_store_holds (fx->farm, "ss2", "base", 0, &holds,
                                      &err));
  g_assert_true (holds);
  g_assert_true (df_farm_store_state_set (fx->farm, "ss1", "base", 0,
                                          DF_STORE_VERIFIED, SHA_A, NULL,
                                          &err));
  g_assert_no_error (err);
  /* now the store state is known: ss2, without a record, holds nothing */
  g_assert_true (df_farm_store_holds (fx->farm, "ss1", "base", 0, &holds,
                                      &err));
  g_assert_true (holds);
  g_assert_true (df_farm_store_holds (fx->farm, "ss2", "base", 0, &holds,
                                      &err));
  g_assert_false (holds);
  /* upsert: the newer record replaces the older */
  g_assert_true (df_farm_store_state_set (fx->farm, "ss1", "base", 0,
                                          DF_STORE_CORRUPT, NULL, "bad",
                                          &err));
  g_autoptr (DfStoreRecord) r = df_farm_store_state_get (fx->farm, "ss1",
                                                         "base", 0, &err);
  g_assert_no_error (err);
  g_assert_cmpint (r->state, ==, DF_STORE_CORRUPT);
  g_assert_null (r->sha256);
  g_assert_cmpstr (r->detail, ==, "bad");
  g_assert_cmpint (r->checked_ms, >, 0);
  g_assert_true (df_farm_store_holds (fx->farm, "ss1", "base", 0, &holds,
                                      &err));
  g_assert_false (holds);
  g_autoptr (GPtrArray) list = df_farm_store_state_list (fx->farm, NULL,
                                                         &err);
  g_assert_cmpuint (list->len, ==, 1);
  /* bad inputs change nothing */
  g_assert_false (df_farm_store_state_set (fx->farm, "ss9", "base", 0,
                                           DF_STORE_VERIFIED, NULL, NULL,
                                           &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  g_assert_false (df_farm_store_state_set (fx->farm, "ss1", "base", 7,
                                           DF_STORE_VERIFIED, NULL, NULL,
                                           &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_NOT_FOUND);
  g_clear_error (&err);
  g_assert_false (df_farm_store_state_set (fx->farm, "ss1", "base", 0,
                                           DF_STORE_VERIFIED, "xyz", NULL,
                                           &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_autoptr (GPtrArray) list2 = df_farm_store_state_list (fx->farm, "base",
                                                          &err);
  g_assert_cmpuint (list2->len, ==, 1);
  /* a version stacked on base: held only where base is verified too */
  g_assert_true (df_farm_version_add (fx->farm, "base", 1, 0, "base.1.qcow2",
                                      SHA_A, 1 << 20, 4096,
                                      DF_VSTATE_TEST, &err));
  g_assert_no_error (err);
  g_assert_true (df_farm_store_state_set (fx->farm, "ss2", "base", 1,
                                          DF_STORE_VERIFIED, SHA_A, NULL,
                                          &err));
  g_assert_true (df_farm_store_holds (fx->farm, "ss2", "base", 1, &holds,
                                      &err));
  g_assert_false (holds); /* ss2 lacks base@0 */
  g_assert_true (df_farm_store_state_set (fx->farm, "ss2", "base", 0,
                                          DF_STORE_VERIFIED, SHA_A, NULL,
                                          &err));
  g_assert_true (df_farm_store_holds (fx->farm, "ss2", "base", 1, &holds,
                                      &err));
  g_assert_true (holds);
  /* an unsealed maintenance version counts as its parent */
  g_assert_true (df_farm_version_add (fx->farm, "base", 2, 1, "base.2.qcow2",
                                      NULL, 1 << 20, 0,
                                      DF_VSTATE_MAINTENANCE, &err));
  g_assert_no_error (err);
  g_assert_true (df_farm_store_holds (fx->farm, "ss2", "base", 2, &holds,
                                      &err));
  g_assert_true (holds);
  g_assert_true (df_farm_store_holds (fx->farm, "ss1", "base", 2, &holds,
                                      &err));
  g_assert_false (holds);
  g_autoptr (GPtrArray) list4 = df_farm_store_state_list (fx->farm, NULL,
                                                          &err);
  g_assert_cmpuint (list4->len, ==, 3);
  g_assert_true (df_farm_store_state_set (fx->farm, "ss2", "base", 0,
                                          DF_STORE_MISSING, NULL, NULL,
                                          &err));
  g_assert_true (df_farm_store_state_set (fx->farm, "ss2", "base", 1,
                                          DF_STORE_MISSING, NULL, NULL,
                                          &err));
  /* records go with their server */
  g_assert_true (df_farm_server_remove (fx->farm, "ss1", &err));
  g_autoptr (GPtrArray) list3 = df_farm_store_state_list (fx->farm, NULL,
                                                          &err);
  g_assert_cmpuint (list3->len, ==, 2);
  for (guint i = 0; i < list3->len; i++)
    g_assert_cmpstr (((DfStoreRecord *) list3->pdata[i])->server, ==, "ss2");
}

static void
test_replicating (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  bool pending = true;
  /* no healthy stream server: nothing to wait for */
  g_assert_true (df_farm_version_replicating (fx->farm, "base", 0, &pending,
                                              &err));
  g_assert_false (pending);
  register_ok (fx->farm, "ss1", 1);
  register_ok (fx->farm, "ss2", 1);
  g_assert_true (df_farm_store_state_set (fx->farm, "ss1", "base", 0,
                                          DF_STORE_VERIFIED, SHA_A, NULL,
                                          &err));
  g_assert_true (df_farm_version_replicating (fx->farm, "base", 0, &pending,
                                              &err));
  g_assert_true (pending); /* ss2 does not hold it */
  g_assert_true (df_farm_store_state_set (fx->farm, "ss2", "base", 0,
                                          DF_STORE_PRESENT, NULL, NULL,
                                          &err));
  g_assert_true (df_farm_version_replicating (fx->farm, "base", 0, &pending,
                                              &err));
  g_assert_true (pending); /* present is not verified */
  /* an unhealthy server does not hold the version back */
  DfServerLoad l = { 0 };
  g_assert_true (df_farm_server_heartbeat (fx->farm, "ss2",
                                           df_farm_now_ms () - 60000, &l,
                                           &err));
  g_assert_true (df_farm_version_replicating (fx->farm, "base", 0, &pending,
                                              &err));
  g_assert_false (pending);
}

/* df_farm_store_verify hashes the real file: verified, corrupt, missing. */
static void
test_verify_file (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  register_ok (fx->farm, "ss1", 1);
  g_autofree char *store = df_farm_store_dir (fx->farm, "good");
  g_assert_cmpint (g_mkdir_with_parents (store, 0750), ==, 0);
  g_autofree char *path = g_build_filename (store, "good.0.qcow2", NULL);
  g_assert_true (g_file_set_contents (path, "diskfarm", -1, &err));
  char sha[65];
  g_assert_true (df_file_sha256 (path, sha, &err));
  g_assert_true (df_farm_vdisk_add (fx->farm, "good", 1 << 20,
                                    "good.0.qcow2", sha, 8, &err));
  g_autoptr (DfVersion) v = df_farm_version_get (fx->farm, "good", 0, &err);
  DfStoreState st = DF_STORE_PRESENT;
  g_autofree char *why = NULL;
  g_assert_true (df_farm_store_verify (fx->farm, "ss1", v, &st, &why, &err));
  g_assert_cmpint (st, ==, DF_STORE_VERIFIED);
  g_assert_null (why);
  g_assert_true (g_file_set_contents (path, "diskfarX", -1, &err));
  g_assert_true (df_farm_store_verify (fx->farm, "ss1", v, &st, &why, &err));
  g_assert_cmpint (st, ==, DF_STORE_CORRUPT);
  g_assert_nonnull (strstr (why, "SHA-256"));
  g_autoptr (DfStoreRecord) r = df_farm_store_state_get (fx->farm, "ss1",
                                                         "good", 0, &err);
  g_assert_cmpint (r->state, ==, DF_STORE_CORRUPT);
  g_assert_nonnull (r->sha256); /* what was found */
  g_clear_pointer (&why, g_free);
  g_unlink (path);
  g_assert_true (df_farm_store_verify (fx->farm, "ss1", v, &st, &why, &err));
  g_assert_cmpint (st, ==, DF_STORE_MISSING);
  /* records go with their version */
  g_assert_true (df_farm_vdisk_remove (fx->farm, "good", &err));
  g_autoptr (GPtrArray) list = df_farm_store_state_list (fx->farm, NULL,
                                                         &err);
  g_assert_no_error (err);
  g_assert_cmpuint (list->len, ==, 0);
}

/* ---- cache leases (leases.c) ---------------------------------------- */

static DfCacheLease *
lease_row (DfFarm *farm, const char *device)
{
  g_autoptr (GError) err = NULL;
  DfCacheLease *l = df_farm_lease_get (farm, device, &err);
  g_assert_no_error (err);
  return l;
}

/* Take, refuse while held, take over only after expiry + margin (a new
 * epoch), refuse the stale holder's renewal, release. */
static void
test_lease_shared (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfCacheLease) a = NULL, b = NULL, row = NULL;
  const gint64 t = 1000000, ttl = 2000, margin = 500;

  g_assert_null (lease_row (fx->farm, "pc01"));
  g_assert_true (df_farm_lease_acquire (fx->farm, "pc01", "ss1", 3, t, ttl,
                                        margin, &a, &err));
  g_assert_no_error (err);
  g_assert_cmpint (a->epoch, ==, 1);
  g_assert_cmpint (a->expires_ms, ==, t + ttl);
  /* held: refused until expiry + margin, naming the holder */
  g_assert_false (df_farm_lease_acquire (fx->farm, "pc01", "ss2", 3,
                                         t + ttl + margin, ttl, margin, &b,
                                         &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_assert_nonnull (strstr (err->message, "server ss1"));
  g_clear_error (&err);
  g_assert_null (b);
  /* the holder renews */
  g_assert_true (df_farm_lease_renew (fx->farm, "pc01", "ss1", 1, t + 600,
                                      ttl, &err));
  g_assert_no_error (err);
  row = lease_row (fx->farm, "pc01");
  g_assert_cmpint (row->expires_ms, ==, t + 600 + ttl);
  /* lapsed: taken over with a new epoch */
  g_assert_true (df_farm_lease_acquire (fx->farm, "pc01", "ss2", 3,
                                        t + 600 + ttl + margin + 1, ttl,
                                        margin, &b, &err));
  g_assert_no_error (err);
  g_assert_cmpint (b->epoch, ==, 2);
  g_assert_cmpstr (b->holder, ==, "ss2");
  /* the old holder's renewal and release change nothing */
  g_assert_false (df_farm_lease_renew (fx->farm, "pc01", "ss1", 1, t + 9000,
                                       ttl, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_DENIED);
  g_clear_error (&err);
  g_assert_true (df_farm_lease_release (fx->farm, "pc01", "ss1", 1, &err));
  g_clear_pointer (&row, df_cache_lease_free);
  row = lease_row (fx->farm, "pc01");
  g_assert_cmpstr (row->holder, ==, "ss2");
  g_assert_cmpint (row->expires_ms, ==, b->expires_ms);
  /* released: anyone takes it at once, and the epoch still grows */
  g_assert_true (df_farm_lease_release (fx->farm, "pc01", "ss2", 2, &err));
  g_clear_pointer (&a, df_cache_lease_free);
  g_assert_true (df_farm_lease_acquire (fx->farm, "pc01", "ss1", 3,
                                        t + 4000, ttl, margin, &a, &err));
  g_assert_cmpint (a->epoch, ==, 3);
  /* bad names change nothing */
  g_assert_false (df_farm_lease_acquire (fx->farm, "bad name", "ss1", 3, t,
                                         ttl, margin, &b, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
}

/* A local cache's generation is refused elsewhere, not on its server nor
 * for a new generation. */
static void
test_lease_local (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfCacheLease) row = NULL;

  g_assert_true (df_farm_lease_claim_local (fx->farm, "pc02", "ss1", 5, 1,
                                            &err));
  g_assert_true (df_farm_lease_claim_local (fx->farm, "pc02", "ss1", 5, 2,
                                            &err));
  g_assert_no_error (err);
  g_assert_false (df_farm_lease_claim_local (fx->farm, "pc02", "ss2", 5, 3,
                                             &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_DENIED);
  g_assert_nonnull (strstr (err->message, "server ss1's local disk"));
  g_clear_error (&err);
  row = lease_row (fx->farm, "pc02");
  g_assert_cmpstr (row->holder, ==, "ss1");
  g_assert_cmpint (row->kind, ==, DF_LEASE_LOCAL);
  g_assert_true (df_farm_lease_claim_local (fx->farm, "pc02", "ss2", 6, 4,
                                            &err));
  g_assert_no_error (err);
  g_clear_pointer (&row, df_cache_lease_free);
  row = lease_row (fx->farm, "pc02");
  g_assert_cmpstr (row->holder, ==, "ss2");
  g_assert_cmpint (row->generation, ==, 6);
}

/* A cache that outlives boots (every generation) stays its server's: a
 * new generation elsewhere is refused too, with its own words. */
static void
test_lease_local_every (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (DfCacheLease) row = NULL;
  const gint64 every = DF_LEASE_EVERY_GENERATION;

  g_assert_true (df_farm_lease_claim_local (fx->farm, "pc03", "ss1", every,
                                            1, &err));
  g_assert_true (df_farm_lease_claim_local (fx->farm, "pc03", "ss1", every,
                                            2, &err));
  g_assert_no_error (err);
  g_assert_false (df_farm_lease_claim_local (fx->farm, "pc03", "ss2", every,
                                             3, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_DENIED);
  g_assert_nonnull (strstr (err->message, "lasting write cache on server "
                                          "ss1's local disk"));
  g_clear_error (&err);
  row = lease_row (fx->farm, "pc03");
  g_assert_cmpstr (row->holder, ==, "ss1");
  g_assert_cmpint (row->generation, ==, every);
}

/* ---- floating portals (portal.c) ------------------------------------------ */

static void
test_portal_check (Fixture *fx, gconstpointer data)
{
  static const struct { const char *portal; bool ok; } cases[] = {
    { "10.0.0.101", true }, { "fd00::65", true }, { "192.168.7.1", true },
    { "0.0.0.0", false }, { "127.0.0.1", false }, { "127.9.9.9", false },
    { "224.0.0.18", false }, { "239.1.1.1", false }, { "::", false },
    { "::1", false }, { "ff02::12", false }, { "ss1.example", false },
    { "10.0.0", false }, { "10.0.0.256", false }, { "", false },
    { "10.0.0.1 ", false }, { "fd00::65/64", false },
  };
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) err = NULL;
      bool ok = df_farm_check_portal (cases[i].portal, &err);
      if (ok != cases[i].ok)
        g_error ("portal '%s': %s", cases[i].portal,
                 ok ? "accepted" : err->message);
      if (!ok)
        g_assert_true (strstr (err->message, "portal '") != NULL);
    }
}

/* The portal is the admin's: add and set write it, a registration (which
 * rewrites address and ports) keeps it, boot scripts name it. */
static void
test_portal_kept (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  DfServer added = { .name = (char *) "ss1", .address = (char *) "10.0.0.9",
                     .iscsi_port = 3260, .nbd_port = 10809,
                     .admin_port = 8001, .power = 1,
                     .portal = (char *) "10.0.0.109" };
  g_assert_true (df_farm_server_add (fx->farm, &added, &err));
  register_ok (fx->farm, "ss1", 2);
  g_autoptr (DfServer) got = df_farm_server_get (fx->farm, "ss1", &err);
  g_assert_no_error (err);
  g_assert_cmpstr (got->address, ==, "127.0.0.1");
  g_assert_cmpstr (got->portal, ==, "10.0.0.109");
  g_assert_cmpstr (df_server_iscsi_address (got), ==, "10.0.0.109");

  /* a bad portal changes nothing */
  g_free (got->portal);
  got->portal = g_strdup ("127.0.0.2");
  g_assert_false (df_farm_server_update (fx->farm, got, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);
  g_autoptr (DfServer) same = df_farm_server_get (fx->farm, "ss1", &err);
  g_assert_cmpstr (same->portal, ==, "10.0.0.109");

  g_clear_pointer (&same->portal, g_free);
  g_assert_true (df_farm_server_update (fx->farm, same, &err));
  g_autoptr (DfServer) none = df_farm_server_get (fx->farm, "ss1", &err);
  g_assert_null (none->portal);
  g_assert_cmpstr (df_server_iscsi_address (none), ==, "127.0.0.1");
}

static DfServer *
portal_server (const char *name, int power, const char *portal)
{
  DfServer *s = g_new0 (DfServer, 1);
  s->name = g_strdup (name);
  s->address = g_strdup_printf ("10.0.0.%u", 10 + (guint) name[1]);
  s->admin_port = 8001;
  s->power = power;
  s->portal = g_strdup (portal);
  s->kind = g_strdup (DF_SERVER_KIND_STREAM);
  return s;
}

static GPtrArray *
portal_farm (void)
{
  GPtrArray *a = g_ptr_array_new_with_free_func ((GDestroyNotify) df_server_free);
  g_ptr_array_add (a, portal_server ("s1", 1, "10.0.0.101"));
  g_ptr_array_add (a, portal_server ("s2", 4, "10.0.0.102"));
  g_ptr_array_add (a, portal_server ("s3", 1, "10.0.0.103"));
  g_ptr_array_add (a, portal_server ("s4", 9, NULL));   /* no portal */
  DfServer *bs = portal_server ("s5", 1, "10.0.0.105");
  g_free (bs->kind);
  bs->kind = g_strdup (DF_SERVER_KIND_BOOTSTRAP);        /* never floats */
  g_ptr_array_add (a, bs);
  return a;
}

static void
test_portal_priority (Fixture *fx, gconstpointer data)
{
  g_autoptr (GPtrArray) a = portal_farm ();
  g_assert_cmpint (df_portal_priority (a, "s1", "s1"), ==, 200);
  /* s1's portal: s2 (power 4) first, then s3 */
  g_assert_cmpint (df_portal_priority (a, "s1", "s2"), ==, 150);
  g_assert_cmpint (df_portal_priority (a, "s1", "s3"), ==, 149);
  /* s2's portal: s1 and s3 both power 1: by name */
  g_assert_cmpint (df_portal_priority (a, "s2", "s1"), ==, 150);
  g_assert_cmpint (df_portal_priority (a, "s2", "s3"), ==, 149);
  g_assert_cmpint (df_portal_priority (a, "s1", "s4"), ==, 0);
  g_assert_cmpint (df_portal_priority (a, "s1", "s5"), ==, 0);
}

/* The instance block of owner in conf (new string). */
static char *
instance_of (const char *conf, const char *owner)
{
  g_autofree char *head = g_strdup_printf ("vrrp_instance diskfarm_%s {",
                                           owner);
  const char *b = strstr (conf, head);
  if (!b)
    return NULL;
  const char *e = strstr (b, "\n}\n");
  g_assert_nonnull (e);
  return g_strndup (b, (gsize) (e - b));
}

static void
test_portal_render (Fixture *fx, gconstpointer data)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (GPtrArray) a = portal_farm ();
  DfPortalConfOpts o = { .interface = "eth0", .vrid_base = 51 };
  g_autofree char *c = df_portal_keepalived_render (a, "s3", "uuid", &o,
                                                    &err);
  g_assert_no_error (err);
  g_assert_nonnull (strstr (c, "router_id diskfarm-s3\n"));
  g_assert_nonnull (strstr (c, "/usr/bin/curl -fsS -m 1 -o /dev/null "
                            "http://10.0.0.61:8001/v1/health\""));
  g_autofree char *i1 = instance_of (c, "s1");
  g_autofree char *i2 = instance_of (c, "s2");
  g_autofree char *i3 = instance_of (c, "s3");
  g_assert_nonnull (i1);
  g_assert_nonnull (i2);
  g_assert_nonnull (i3);
  g_assert_null (instance_of (c, "s4"));
  g_assert_null (instance_of (c, "s5"));
  g_assert_nonnull (strstr (i1, "state BACKUP\n"));
  g_assert_nonnull (strstr (i1, "virtual_router_id 51\n"));
  g_assert_nonnull (strstr (i1, "priority 149\n"));
  g_assert_nonnull (strstr (i1, "10.0.0.101 dev eth0\n"));
  g_assert_nonnull (strstr (i2, "virtual_router_id 52\n"));
  g_assert_nonnull (strstr (i2, "priority 149\n"));
  g_assert_nonnull (strstr (i3, "state MASTER\n"));
  g_assert_nonnull (strstr (i3, "virtual_router_id 53\n"));
  g_assert_nonnull (strstr (i3, "priority 200\n"));
  g_assert_nonnull (strstr (i3, "diskfarm_streamsvc\n"));

  /* refusals */
  static const struct { const char *self, *ifname, *url; guint base;
                        const char *msg; } bad[] = {
    { "s4", "eth0", NULL, 51, "server s4 has no portal" },
    { "s5", "eth0", NULL, 51, "server s5 has no portal" },
    { "s1", "", NULL, 51, "interface ''" },
    { "s1", "eth0 x", NULL, 51, "interface 'eth0 x'" },
    { "s1", "averyveryverylongif", NULL, 51, "interface" },
    { "s1", "eth0", "http://a b/", 51, "health URL" },
    { "s1", "eth0", "https://x/v1/health", 51, "health URL" },
    { "s1", "eth0", "http://x/\"", 51, "health URL" },
    { "s1", "eth0", NULL, 254, "router ids 254-256" },
    { "s1", "eth0", NULL, 0, "router ids" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GError) e = NULL;
      DfPortalConfOpts b = { .interface = bad[i].ifname,
                             .vrid_base = bad[i].base,
                             .health_url = bad[i].url };
      g_autofree char *r = df_portal_keepalived_render (a, bad[i].self,
                                                        "uuid", &b, &e);
      g_assert_null (r);
      g_assert_error (e, DF_ERROR, DF_ERROR_INVALID);
      if (!strstr (e->message, bad[i].msg))
        g_error ("case %u: '%s' lacks '%s'", i, e->message, bad[i].msg);
    }
}

static const TestFarmCase tests[] = {
  { "/registry/register-fills-admin-row", test_register_fills_admin_row },
  { "/registry/heartbeat-and-state", test_heartbeat_and_state },
  { "/registry/bad-registration", test_bad_registration },
  { "/registry/store-state", test_store_state },
  { "/registry/replicating", test_replicating },
  { "/registry/verify-file", test_verify_file },
  { "/registry/lease-shared", test_lease_shared },
  { "/registry/lease-local", test_lease_local },
  { "/registry/lease-local-every", test_lease_local_every },
  { "/registry/portal-check", test_portal_check },
  { "/registry/portal-kept", test_portal_kept },
  { "/registry/portal-priority", test_portal_priority },
  { "/registry/portal-render", test_portal_render },
};

int
main (int argc, char **argv)
{
  return test_farm_main (argc, argv, NULL, tests, G_N_ELEMENTS (tests));
}
