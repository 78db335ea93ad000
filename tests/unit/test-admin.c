/* Unit tests for lib/admin: the admin API client against in-process
 * SoupServers on 127.0.0.1:0 (good answers, wrong status, not JSON, wrong
 * shapes, a closed port), and the farm-wide live view (own farm, another
 * farm, a server that does not say, unreachable, duplicates, older and
 * mistyped session fields) with the refusal message. */
#include "test-db.h"
#include "admin-client.h"
#include "live.h"
#include "common.h"
#include "test-util.h"

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <libsoup/soup.h>
#include <string.h>

/* ---- fake streamsvc admin APIs, served from a thread ------------------ */

typedef struct {
  SoupServer *server;
  guint16 port;
  char *health;     /* body of /v1/health */
  char *sessions;   /* body of /v1/sessions */
  guint status;     /* status of every answer */
} Fake;

typedef struct {
  GMainContext *ctx;
  GMainLoop *loop;
  GThread *thread;
  GPtrArray *fakes;  /* Fake* */
} Fakes;

static void
fake_handle (SoupServer *server, SoupServerMessage *msg, const char *path,
             GHashTable *query, gpointer data)
{
  Fake *f = data;
  const char *body = g_str_equal (path, "/v1/health") ? f->health
                     : g_str_equal (path, "/v1/sessions") ? f->sessions
                     : NULL;
  if (body == NULL)
    {
      soup_server_message_set_status (msg, 404, NULL);
      return;
    }
  soup_server_message_set_status (msg, f->status, NULL);
  soup_server_message_set_response (msg, "application/json", SOUP_MEMORY_COPY,
                                    body, strlen (body));
}

static gpointer
fakes_run (gpointer data)
{
  Fakes *fs = data;
  g_main_context_push_thread_default (fs->ctx);
  g_main_loop_run (fs->loop);
  g_main_context_pop_thread_default (fs->ctx);
  return NULL;
}

static Fake *
fake_add (Fakes *fs, const char *health, const char *sessions, guint status)
{
  Fake *f = g_new0 (Fake, 1);
  f->health = g_strdup (health);
  f->sessions = g_strdup (sessions);
  f->status = status;
  g_main_context_push_thread_default (fs->ctx);
  f->server = soup_server_new (NULL, NULL);
  soup_server_add_handler (f->server, NULL, fake_handle, f, NULL);
  g_autoptr (GError) err = NULL;
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (
    G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (lo, 0);
  g_assert_true (soup_server_listen (f->server, sa, 0, &err));
  g_assert_no_error (err);
  g_main_context_pop_thread_default (fs->ctx);
  GSList *ls = soup_server_get_listeners (f->server);
  g_autoptr (GSocketAddress) bound = g_socket_get_local_address (ls->data,
                                                                 NULL);
  f->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (bound));
  g_slist_free (ls);
  g_ptr_array_add (fs->fakes, f);
  return f;
}

static Fakes *
fakes_new (void)
{
  Fakes *fs = g_new0 (Fakes, 1);
  fs->ctx = g_main_context_new ();
  fs->loop = g_main_loop_new (fs->ctx, FALSE);
  fs->fakes = g_ptr_array_new ();
  return fs;
}

static void
fakes_start (Fakes *fs)
{
  fs->thread = g_thread_new ("fakes", fakes_run, fs);
}

static gboolean
quit_cb (gpointer loop)
{
  g_main_loop_quit (loop);
  return G_SOURCE_REMOVE;
}

static void
fakes_free (Fakes *fs)
{
  if (fs->thread)
    {
      g_main_context_invoke (fs->ctx, quit_cb, fs->loop);
      g_thread_join (fs->thread);
    }
  for (guint i = 0; i < fs->fakes->len; i++)
    {
      Fake *f = fs->fakes->pdata[i];
      soup_server_disconnect (f->server);
      g_object_unref (f->server);
      g_free (f->health);
      g_free (f->sessions);
      g_free (f);
    }
  g_ptr_array_free (fs->fakes, TRUE);
  g_main_loop_unref (fs->loop);
  g_main_context_unref (fs->ctx);
  g_free (fs);
}

/* A TCP socket bound to a free loopback port (*port); caller unrefs. */
static GSocket *
loopback_socket (guint16 *port)
{
  GSocket *s = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM,
                             G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (
    G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (lo, 0);
  g_assert_true (g_socket_bind (s, sa, TRUE, NULL));
  g_autoptr (GSocketAddress) b = g_socket_get_local_address (s, NULL);
  *port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (b));
  return s;
}

/* A loopback port nothing listens on (bound, then closed). */
static guint16
closed_port (void)
{
  guint16 port;
  g_autoptr (GSocket) s = loopback_socket (&port);
  g_socket_close (s, NULL);
  return port;
}

/* ---- address grammar --------------------------------------------------- */

static void
test_addr_parse (void)
{
  static const struct { const char *in; const char *host; guint16 port; }
  good[] = {
    { "127.0.0.1:8001", "127.0.0.1", 8001 },
    { "[::1]:9000", "::1", 9000 },
    { "ss1.example", "ss1.example", DF_ADMIN_PORT },
    { "10.0.0.5", "10.0.0.5", DF_ADMIN_PORT },
  };
  for (gsize i = 0; i < G_N_ELEMENTS (good); i++)
    {
      g_autofree char *host = NULL;
      guint16 port = 0;
      g_autoptr (GError) err = NULL;
      g_assert_true (df_admin_addr_parse (good[i].in, &host, &port, &err));
      g_assert_no_error (err);
      g_assert_cmpstr (host, ==, good[i].host);
      g_assert_cmpuint (port, ==, good[i].port);
    }
  static const char *const bad[] = {
    "", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http",
    "[::1", ":8001", "a b:80", "[::1]x", "host:-1", "host:+80",
    "::1:8001x", "ho$t:80",
  };
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autofree char *host = NULL;
      guint16 port = 0;
      g_autoptr (GError) err = NULL;
      g_assert_false (df_admin_addr_parse (bad[i], &host, &port, &err));
      g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
      g_assert_nonnull (strstr (err->message, "invalid admin address"));
      g_assert_null (host);
    }
}

/* ---- the client --------------------------------------------------------- */

static void
test_client (void)
{
  Fakes *fs = fakes_new ();
  Fake *ok = fake_add (fs, "{\"status\":\"ok\",\"sessions\":2,\"version\":"
                       "\"0.1.0\",\"farm\":\"f-1\"}", "[{\"id\":1}]", 200);
  Fake *old = fake_add (fs, "{\"status\":\"ok\",\"sessions\":\"two\"}",
                        "{\"not\":\"an array\"}", 200);
  Fake *e500 = fake_add (fs, "{}", "[]", 500);
  Fake *junk = fake_add (fs, "<html>", "[1,", 200);
  Fake *arr = fake_add (fs, "[]", "[]", 200);
  fakes_start (fs);
  g_autoptr (GError) err = NULL;

  g_autoptr (DfAdminHealth) h = df_admin_health ("127.0.0.1", ok->port, &err);
  g_assert_no_error (err);
  g_assert_cmpstr (h->status, ==, "ok");
  g_assert_cmpint (h->sessions, ==, 2);
  g_assert_cmpstr (h->version, ==, "0.1.0");
  g_assert_cmpstr (h->farm, ==, "f-1");
  g_autoptr (JsonNode) s = df_admin_sessions ("127.0.0.1", ok->port, &err);
  g_assert_no_error (err);
  g_assert_true (JSON_NODE_HOLDS_ARRAY (s));

  /* An older server: no farm, a mistyped count is "not said". */
  g_autoptr (DfAdminHealth) ho = df_admin_health ("127.0.0.1", old->port,
                                                  &err);
  g_assert_no_error (err);
  g_assert_null (ho->farm);
  g_assert_cmpint (ho->sessions, ==, -1);
  g_assert_null (df_admin_sessions ("127.0.0.1", old->port, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_nonnull (strstr (err->message, "not a JSON array"));
  g_clear_error (&err);

  g_autofree char *where = g_strdup_printf ("admin API at 127.0.0.1:%u: ",
                                            e500->port);
  g_assert_null (df_admin_health ("127.0.0.1", e500->port, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_true (g_str_has_prefix (err->message, where));
  g_assert_nonnull (strstr (err->message, "HTTP 500"));
  g_clear_error (&err);

  g_assert_null (df_admin_health ("127.0.0.1", junk->port, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_nonnull (strstr (err->message, "not JSON"));
  g_clear_error (&err);
  g_assert_null (df_admin_sessions ("127.0.0.1", junk->port, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);

  g_assert_null (df_admin_health ("127.0.0.1", arr->port, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_assert_nonnull (strstr (err->message, "not a JSON object"));
  g_clear_error (&err);

  guint16 closed = closed_port ();
  g_autofree char *cwhere = g_strdup_printf ("admin API at 127.0.0.1:%u: ",
                                             closed);
  g_assert_null (df_admin_health ("127.0.0.1", closed, &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_IO);
  g_assert_true (g_str_has_prefix (err->message, cwhere));
  g_clear_error (&err);
  fakes_free (fs);
}

/* A server that answers one byte every 200 ms (never an I/O timeout). */
static gpointer
trickle_run (gpointer data)
{
  GSocket *ls = data;
  g_autoptr (GSocket) c = g_socket_accept (ls, NULL, NULL);
  if (c == NULL)
    return NULL;
  const char *answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
  for (gsize i = 0; i < strlen (answer); i++)
    {
      if (g_socket_send (c, answer + i, 1, NULL, NULL) != 1)
        break;
      g_usleep (200 * 1000);
    }
  return NULL;
}

static void
test_trickle (void)
{
  guint16 port;
  g_autoptr (GSocket) ls = loopback_socket (&port);
  g_assert_true (g_socket_listen (ls, NULL));
  GThread *t = g_thread_new ("trickle", trickle_run, ls);
  gint64 t0 = g_get_monotonic_time ();
  g_autoptr (GError) err = NULL;
  g_assert_null (df_admin_health ("127.0.0.1", port, &err));
  gint64 took = g_get_monotonic_time () - t0;
  g_assert_error (err, DF_ERROR, DF_ERROR_IO);
  g_assert_nonnull (strstr (err->message, "no complete answer within 3 s"));
  g_assert_cmpint (took, <, (DF_ADMIN_TIMEOUT_S + 1) * G_TIME_SPAN_SECOND);
  g_assert_cmpint (took, >=, DF_ADMIN_TIMEOUT_S * G_TIME_SPAN_SECOND - 100000);
  g_thread_join (t);
}

/* ---- the live view ------------------------------------------------------ */

static void
server_add (DfFarm *farm, const char *name, guint16 admin_port)
{
  g_autoptr (GError) err = NULL;
  DfServer s = { .name = (char *) name, .address = "127.0.0.1",
                 .iscsi_port = 3260, .nbd_port = 10809,
                 .admin_port = admin_port, .power = 1 };
  g_assert_true (df_farm_server_add (farm, &s, &err));
  g_assert_no_error (err);
}

static const DfLiveSkip *
skip_named (GPtrArray *skips, const char *server)
{
  for (guint i = 0; i < skips->len; i++)
    if (g_strcmp0 (((DfLiveSkip *) skips->pdata[i])->server, server) == 0)
      return skips->pdata[i];
  return NULL;
}

static void
test_live (void)
{
  g_autoptr (GError) err = NULL;
  g_autofree char *tmp = g_dir_make_tmp ("test-admin-XXXXXX", &err);
  g_assert_no_error (err);
  g_autofree char *dir = g_build_filename (tmp, "farm", NULL);
  DfFarm *farm = test_farm_open (dir, true, "test:unit", &err);
  g_assert_no_error (err);
  const char *uuid = df_farm_uuid (farm);

  g_autofree char *mine = g_strdup_printf (
    "{\"status\":\"ok\",\"sessions\":2,\"farm\":\"%s\"}", uuid);
  Fakes *fs = fakes_new ();
  Fake *own = fake_add (fs, mine,
    "[{\"id\":7,\"proto\":\"nbd\",\"client\":\"127.0.0.1:5555\","
    "\"export\":\"device/m1\",\"device\":\"m1\",\"generation\":3,"
    "\"vdisk\":\"win10\",\"version\":2,\"cache\":\"server\","
    "\"maintenance\":true,\"started\":\"2026-12-01T10:00:00Z\","
    "\"bytes_read\":512,\"bytes_written\":4096,\"ops\":3},"
    /* an older server's entry, by MAC, with mistyped extras */
    "{\"id\":8,\"proto\":\"iscsi\",\"client\":\"10.0.0.9:40000\","
    "\"export\":\"device/52:54:00:00:00:02\",\"device\":\"52-54-00-00-00-02\","
    "\"generation\":\"3\",\"version\":null,\"maintenance\":1},"
    "{\"id\":9,\"proto\":\"nbd\",\"export\":\"vdisk/win10\",\"device\":null},"
    "42]", 200);
  Fake *other = fake_add (fs, "{\"status\":\"ok\",\"sessions\":1,\"farm\":"
                          "\"00000000-0000-4000-8000-000000000000\"}",
                          "[{\"id\":1,\"device\":\"m1\"}]", 200);
  Fake *nofarm = fake_add (fs, "{\"status\":\"ok\",\"sessions\":1}",
                           "[{\"id\":1,\"device\":\"m1\"}]", 200);
  /* control characters in what a server says never reach a message */
  Fake *evil = fake_add (fs, "{\"status\":\"ok\",\"farm\":\"x\\u001b[2J\\ny\"}",
                         "[]", 200);
  fakes_start (fs);
  guint16 closed = closed_port ();
  server_add (farm, "s1", own->port);
  server_add (farm, "sB", other->port);
  server_add (farm, "sOld", nofarm->port);
  server_add (farm, "sDead", closed);
  server_add (farm, "sEvil", evil->port);

  /* The extra address names s1 again: asked once. */
  g_autofree char *extra = g_strdup_printf ("127.0.0.1:%u", own->port);
  g_autoptr (DfLive) live = df_live_collect (farm, extra, &err);
  g_assert_no_error (err);
  g_assert_cmpuint (live->answered, ==, 1);
  g_assert_false (df_live_unknown (live));
  g_assert_cmpuint (live->sessions->len, ==, 3);
  const DfLiveSession *a = live->sessions->pdata[0];
  g_assert_cmpstr (a->server, ==, "s1");
  g_assert_cmpstr (a->address, ==, extra);
  g_assert_cmpint (a->id, ==, 7);
  g_assert_cmpstr (a->device, ==, "m1");
  g_assert_cmpint (a->generation, ==, 3);
  g_assert_cmpstr (a->vdisk, ==, "win10");
  g_assert_cmpint (a->version, ==, 2);
  g_assert_cmpstr (a->cache, ==, "server");
  g_assert_true (a->maintenance);
  g_assert_cmpint (a->bytes_written, ==, 4096);
  const DfLiveSession *b = live->sessions->pdata[1];
  g_assert_cmpint (b->generation, ==, -1);
  g_assert_cmpint (b->version, ==, -1);
  g_assert_null (b->vdisk);
  g_assert_null (b->cache);
  g_assert_false (b->maintenance);
  g_assert_null (((DfLiveSession *) live->sessions->pdata[2])->device);

  g_assert_cmpuint (live->foreign->len, ==, 3);
  const DfLiveSkip *ke = skip_named (live->foreign, "sEvil");
  g_assert_nonnull (ke);
  g_assert_nonnull (strstr (ke->reason, "it serves farm x?[2J?y, not this"));
  const DfLiveSkip *kb = skip_named (live->foreign, "sB");
  g_assert_nonnull (kb);
  g_autofree char *want_b = g_strdup_printf (
    "it serves farm 00000000-0000-4000-8000-000000000000, not this farm "
    "(%s)", uuid);
  g_assert_cmpstr (kb->reason, ==, want_b);
  const DfLiveSkip *ko = skip_named (live->foreign, "sOld");
  g_assert_nonnull (ko);
  g_assert_nonnull (strstr (ko->reason, "does not say which farm"));
  g_assert_cmpuint (live->unreachable->len, ==, 1);
  const DfLiveSkip *kd = skip_named (live->unreachable, "sDead");
  g_assert_nonnull (kd);
  g_assert_nonnull (strstr (kd->reason, "admin API at 127.0.0.1:"));

  /* Which sessions are a device's (by name or MAC) and the refusal. */
  DfDevice m1 = { .name = "m1", .mac = "52:54:00:00:00:01" };
  DfDevice m2 = { .name = "m2", .mac = "52:54:00:00:00:02" };
  DfDevice p9 = { .name = "p9", .mac = "52:54:00:00:00:09" };
  g_autoptr (GPtrArray) s1 = df_live_device_sessions (live, &m1);
  g_autoptr (GPtrArray) s2 = df_live_device_sessions (live, &m2);
  g_autoptr (GPtrArray) s9 = df_live_device_sessions (live, &p9);
  g_assert_cmpuint (s1->len, ==, 1);  /* sB's and sOld's m1 do not count */
  g_assert_cmpuint (s2->len, ==, 1);
  g_assert_cmpuint (s9->len, ==, 0);
  g_assert_false (df_live_refuse (live, &m1, false, "vdisk win10: "
                                  "maintenance ", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_BUSY);
  g_autofree char *want = g_strdup_printf (
    "vdisk win10: maintenance device m1 is live on server s1 (127.0.0.1:%u, "
    "session 7, nbd from 127.0.0.1:5555): stop it first or use --force",
    own->port);
  g_assert_cmpstr (err->message, ==, want);
  g_clear_error (&err);
  g_assert_true (df_live_refuse (live, &m1, true, NULL, &err));
  g_assert_true (df_live_refuse (live, &p9, false, NULL, &err));
  g_assert_no_error (err);

  /* Nothing answers: unknown, not an error. */
  g_autofree char *dead = g_strdup_printf ("127.0.0.1:%u", closed);
  g_assert_true (df_farm_server_remove (farm, "s1", &err));
  g_autoptr (DfLive) none = df_live_collect (farm, dead, &err);
  g_assert_no_error (err);
  g_assert_true (df_live_unknown (none));
  g_assert_cmpuint (none->unreachable->len, ==, 1);  /* sDead == extra */
  g_assert_true (df_live_refuse (none, &m1, false, NULL, &err));

  /* Servers are asked at once: two that never answer cost one deadline. */
  GSocket *silent[2];
  for (int i = 0; i < 2; i++)
    {
      silent[i] = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM,
                                G_SOCKET_PROTOCOL_TCP, NULL);
      g_autoptr (GInetAddress) lo = g_inet_address_new_loopback (
        G_SOCKET_FAMILY_IPV4);
      g_autoptr (GSocketAddress) sa = g_inet_socket_address_new (lo, 0);
      g_assert_true (g_socket_bind (silent[i], sa, TRUE, NULL));
      g_assert_true (g_socket_listen (silent[i], NULL));  /* never accepts */
      g_autoptr (GSocketAddress) bound
        = g_socket_get_local_address (silent[i], NULL);
      g_autofree char *name = g_strdup_printf ("quiet%d", i);
      server_add (farm, name, g_inet_socket_address_get_port (
                                G_INET_SOCKET_ADDRESS (bound)));
    }
  gint64 t0 = g_get_monotonic_time ();
  g_autoptr (DfLive) slow = df_live_collect (farm, NULL, &err);
  gint64 took = g_get_monotonic_time () - t0;
  g_assert_no_error (err);
  /* sDead, quiet0/1, and the farm's admin socket (extra NULL: no
   * streamsvc listens there in this test) */
  g_assert_cmpuint (slow->unreachable->len, ==, 4);
  g_assert_nonnull (skip_named (slow->unreachable, "quiet1"));
  g_assert_cmpint (took, <, (2 * DF_ADMIN_TIMEOUT_S - 1) * G_TIME_SPAN_SECOND);
  for (int i = 0; i < 2; i++)
    g_object_unref (silent[i]);

  /* A malformed extra address is an error. */
  g_assert_null (df_live_collect (farm, "127.0.0.1:0", &err));
  g_assert_error (err, DF_ERROR, DF_ERROR_INVALID);
  g_clear_error (&err);

  fakes_free (fs);
  df_farm_close (farm);
  tu_rmrf (tmp);
}

static const TuTest tests[] = {
  { "/admin/addr-parse", test_addr_parse },
  { "/admin/client", test_client },
  { "/admin/trickle-deadline", test_trickle },
  { "/admin/live", test_live },
};

TU_MAIN_SETUP (test_db_init, tests)
