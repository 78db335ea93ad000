/* Unit tests: session table, per-export counters, JSON and Prometheus
 * text produced by streamsvc/sessions.c. */
#include <string.h>

#include "sessions.h"
#include "test-metrics.h"
#include "test-util.h"

/* ---- helpers: a small exposition-format reader ------------------------ */

/* Every non-comment line is "name[{labels}] value"; every sample's family
 * (name less _bucket/_sum/_count for histograms) has HELP and TYPE lines
 * before it, each family's HELP/TYPE appears once. */
static void
check_exposition_format (const char *text)
{
  g_autoptr (GRegex) sample = g_regex_new (
      "^([a-zA-Z_:][a-zA-Z0-9_:]*)"
      "(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\\n]|\\\\[\\\\\"n])*\",?)*\\})?"
      " [0-9.eE+-]+$",
      0, 0, NULL);
  g_autoptr (GHashTable) typed
      = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);

  g_assert_true (g_str_has_suffix (text, "\n"));
  for (guint i = 0; lines[i] != NULL && lines[i][0] != '\0'; i++)
    {
      g_autoptr (GMatchInfo) mi = NULL;
      g_autofree char *name = NULL;
      char fam[256];

      if (g_str_has_prefix (lines[i], "# TYPE "))
        {
          g_auto (GStrv) f = g_strsplit (lines[i] + 7, " ", 2);
          g_assert_false (g_hash_table_contains (typed, f[0]));
          g_hash_table_insert (typed, g_strdup (f[0]), g_strdup (f[1]));
          continue;
        }
      if (g_str_has_prefix (lines[i], "# HELP "))
        continue;
      if (!g_regex_match (sample, lines[i], 0, &mi))
        g_error ("malformed sample line: %s", lines[i]);
      name = g_match_info_fetch (mi, 1);
      g_strlcpy (fam, name, sizeof fam);
      if (!g_hash_table_contains (typed, fam))
        {
          for (const char *const *suf
               = (const char *const[]){ "_bucket", "_sum", "_count", NULL };
               *suf; suf++)
            if (g_str_has_suffix (name, *suf))
              fam[strlen (name) - strlen (*suf)] = '\0';
        }
      g_assert_true (g_hash_table_contains (typed, fam));
    }
}

/* ---- tests ------------------------------------------------------------ */

static void
test_json (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *a = df_session_start (s, "nbd", "127.0.0.1:4242");
  DfSession *b = df_session_start (s, "nbd", "unix");
  DfSession *c = df_session_start (s, "iscsi", "10.0.0.9:3260");
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) err = NULL;
  g_autofree char *text = NULL;
  g_autoptr (GDateTime) started = NULL;
  JsonNode *node;
  JsonArray *arr;
  JsonObject *o;

  df_session_set_export (a, "device/pc01", "pc01");
  df_session_set_export (b, "vdisk/web", NULL);
  df_session_account (a, DF_OP_READ, 4096, 80000, false);
  df_session_account (a, DF_OP_WRITE, 512, 80000, false);
  df_session_account (a, DF_OP_WRITE, 512, 80000, true); /* failed */
  df_session_account (b, DF_OP_READ, 65536, 1000, false);
  df_session_end (c);
  g_assert_cmpuint (df_sessions_count (s), ==, 2);

  node = df_sessions_to_json (s);
  text = json_to_string (node, FALSE);
  json_node_unref (node);
  g_assert_true (json_parser_load_from_data (p, text, -1, &err));
  g_assert_no_error (err);
  arr = json_node_get_array (json_parser_get_root (p));
  g_assert_cmpuint (json_array_get_length (arr), ==, 2);

  o = json_array_get_object_element (arr, 0); /* ordered by id */
  g_assert_cmpstr (json_object_get_string_member (o, "proto"), ==, "nbd");
  g_assert_cmpstr (json_object_get_string_member (o, "client"), ==,
                   "127.0.0.1:4242");
  g_assert_cmpstr (json_object_get_string_member (o, "export"), ==,
                   "device/pc01");
  g_assert_cmpstr (json_object_get_string_member (o, "device"), ==, "pc01");
  g_assert_cmpint (json_object_get_int_member (o, "bytes_read"), ==, 4096);
  g_assert_cmpint (json_object_get_int_member (o, "bytes_written"), ==, 512);
  g_assert_cmpint (json_object_get_int_member (o, "ops"), ==, 3);
  started = g_date_time_new_from_iso8601 (
      json_object_get_string_member (o, "started"), NULL);
  g_assert_nonnull (started);

  o = json_array_get_object_element (arr, 1);
  g_assert_cmpstr (json_object_get_string_member (o, "export"), ==,
                   "vdisk/web");
  g_assert_true (json_object_get_null_member (o, "device"));
  g_assert_cmpint (json_object_get_int_member (o, "bytes_read"), ==, 65536);
  g_assert_cmpint (json_object_get_int_member (o, "id"), >,
                   json_object_get_int_member (
                       json_array_get_object_element (arr, 0), "id"));

  df_session_end (a);
  df_session_end (b);
  g_assert_cmpuint (df_sessions_count (s), ==, 0);
  df_sessions_free (s);
}

/* Latency (ns) -> expected smallest le bucket holding it. */
static const struct
{
  uint64_t ns;
  const char *le;
} latency_cases[] = {
  { 0, "0.00005" },
  { 50000, "0.00005" }, /* le is inclusive */
  { 50001, "0.0001" },
  { 999999, "0.001" },
  { 1000000, "0.001" },
  { 30000000, "0.05" },
  { 1000000000, "1" },
  { 1000000001, "+Inf" },
  { UINT64_C (3600000000000), "+Inf" },
};

static const char *const all_le[] = {
  "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
  "0.01",    "0.025",  "0.05",    "0.1",    "0.25",  "1",      "+Inf",
};

static gint64
bucket (const char *text, const char *export_name, const char *le)
{
  g_autofree char *key = g_strdup_printf (
      "diskfarm_request_duration_seconds_bucket{export=\"%s\",le=\"%s\"}",
      export_name, le);

  return tu_metric_value (text, key);
}

/* The value of diskfarm_ops_total{export="EXPORT",op="OP"} in text. */
static gint64
ops_total (const char *text, const char *export_name, const char *op)
{
  g_autofree char *key = g_strdup_printf (
      "diskfarm_ops_total{export=\"%s\",op=\"%s\"}", export_name, op);

  return tu_metric_value (text, key);
}

/* The metrics exposition of s (new string), checked line by line. */
static GString *
metrics_of (DfSessions *s)
{
  GString *out = g_string_new (NULL);

  df_sessions_metrics (s, out);
  check_exposition_format (out->str);
  return out;
}

static void
test_histogram_buckets (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (latency_cases); i++)
    {
      DfSessions *s = df_sessions_new ();
      DfSession *ss = df_session_start (s, "nbd", "unix");
      bool reached = false;

      df_session_set_export (ss, "vdisk/x", NULL);
      df_session_account (ss, DF_OP_READ, 1, latency_cases[i].ns, false);
      g_autoptr (GString) out = metrics_of (s);
      for (guint b = 0; b < G_N_ELEMENTS (all_le); b++)
        {
          reached = reached || strcmp (all_le[b], latency_cases[i].le) == 0;
          g_assert_cmpint (bucket (out->str, "vdisk/x", all_le[b]), ==,
                           reached ? 1 : 0);
        }
      df_session_end (ss);
      df_sessions_free (s);
    }
}

static void
test_metrics_text (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *a = df_session_start (s, "nbd", "127.0.0.1:1");
  DfSession *b = df_session_start (s, "nbd", "127.0.0.1:2");
  gint64 prev = 0;

  df_session_set_export (a, "device/pc01", "pc01");
  df_session_set_export (b, "device/pc01", "pc01"); /* shared counters */
  for (guint i = 0; i < 100; i++)
    df_session_account (i % 2 ? a : b, DF_OP_READ, 4096, i * 20000, false);
  df_session_account (a, DF_OP_WRITE, 8192, 10, false);
  df_session_account (a, DF_OP_TRIM, 0, 10, false);
  df_session_account (b, DF_OP_FLUSH, 0, 10, true);
  df_session_quota_hit (a);
  df_session_quota_hit (b);
  g_autoptr (GString) out = metrics_of (s);

  g_assert_cmpint (ops_total (out->str, "device/pc01", "read"), ==, 100);
  g_assert_cmpint (ops_total (out->str, "device/pc01", "trim"), ==, 1);
  g_assert_cmpint (ops_total (out->str, "device/pc01", "zero"), ==, 0);
  g_assert_cmpint (tu_metric_value (out->str, "diskfarm_errors_total{export="
                                           "\"device/pc01\"}"),
                   ==, 1);
  g_assert_cmpint (tu_metric_value (out->str,
                                 "diskfarm_bytes_total{export="
                                 "\"device/pc01\",direction=\"read\"}"),
                   ==, 409600);
  g_assert_cmpint (tu_metric_value (out->str,
                                 "diskfarm_bytes_total{export="
                                 "\"device/pc01\",direction=\"write\"}"),
                   ==, 8192);
  g_assert_cmpint (tu_metric_value (out->str, "diskfarm_quota_refusals_total{"
                                           "device=\"pc01\"}"),
                   ==, 2);
  g_assert_cmpint (tu_metric_value (out->str, "diskfarm_sessions"), ==, 2);
  /* cumulative buckets, +Inf == _count == every request */
  for (guint i = 0; i < G_N_ELEMENTS (all_le); i++)
    {
      gint64 v = bucket (out->str, "device/pc01", all_le[i]);

      g_assert_cmpint (v, >=, prev);
      prev = v;
    }
  g_assert_cmpint (prev, ==, 103);
  g_assert_cmpint (tu_metric_value (out->str,
                                 "diskfarm_request_duration_"
                                 "seconds_count{export=\"device/pc01\"}"),
                   ==, 103);
  /* 100 reads at 0..1980 us: 51 of them (0..1000 us) are <= 1 ms */
  g_assert_cmpint (bucket (out->str, "device/pc01", "0.001"), ==, 51 + 3);
  g_assert_nonnull (strstr (out->str, "# TYPE diskfarm_request_duration_"
                                      "seconds histogram\n"));
  g_assert_nonnull (strstr (out->str,
                            "diskfarm_request_duration_seconds_sum"
                            "{export=\"device/pc01\"} 0.099000030\n"));
  df_session_end (a);
  df_session_end (b);
  df_sessions_free (s);
}

static const struct
{
  const char *raw;
  const char *escaped;
} escape_cases[] = {
  { "plain", "plain" },
  { "a\"b", "a\\\"b" },
  { "back\\slash", "back\\\\slash" },
  { "new\nline", "new\\nline" },
  { "", "" },
  { "\\\"\n", "\\\\\\\"\\n" },
};

static void
test_label_escaping (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (escape_cases); i++)
    {
      g_autoptr (GString) out = g_string_new (NULL);

      df_prom_append_escaped (out, escape_cases[i].raw);
      g_assert_cmpstr (out->str, ==, escape_cases[i].escaped);
    }
  /* and in a real exposition: still parses line by line */
  {
    DfSessions *s = df_sessions_new ();
    DfSession *ss = df_session_start (s, "nbd", "unix");

    df_session_set_export (ss, "vdisk/we\"ird\n\\", "dev\"ice");
    df_session_account (ss, DF_OP_READ, 1, 1, false);
    df_session_quota_hit (ss);
    g_autoptr (GString) out = metrics_of (s);
    g_assert_cmpint (tu_metric_value (out->str,
                                   "diskfarm_ops_total{export="
                                   "\"vdisk/we\\\"ird\\n\\\\\",op=\"read\"}"),
                     ==, 1);
    df_session_end (ss);
    df_sessions_free (s);
  }
}

/* ---- concurrency: atomics, no lost updates ---------------------------- */

#define N_THREADS 4
#define N_PER_THREAD 20000

static gpointer
account_thread (gpointer data)
{
  DfSession *ss = data;

  for (guint i = 0; i < N_PER_THREAD; i++)
    df_session_account (ss, i % 2 ? DF_OP_READ : DF_OP_WRITE, 512,
                        (i % 7) * 100000, false);
  return NULL;
}

static void
test_concurrent_accounting (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *ss[N_THREADS];
  GThread *t[N_THREADS];

  for (guint i = 0; i < N_THREADS; i++)
    {
      ss[i] = df_session_start (s, "nbd", "unix");
      df_session_set_export (ss[i], "vdisk/shared", NULL);
      t[i] = g_thread_new ("acct", account_thread, ss[i]);
    }
  for (guint i = 0; i < N_THREADS; i++)
    g_thread_join (t[i]);
  g_autoptr (GString) out = metrics_of (s);
  g_assert_cmpint (ops_total (out->str, "vdisk/shared", "read"), ==,
                   N_THREADS * N_PER_THREAD / 2);
  g_assert_cmpint (tu_metric_value (out->str,
                                 "diskfarm_bytes_total{export="
                                 "\"vdisk/shared\",direction=\"write\"}"),
                   ==, (gint64)N_THREADS * N_PER_THREAD / 2 * 512);
  g_assert_cmpint (bucket (out->str, "vdisk/shared", "+Inf"), ==,
                   N_THREADS * N_PER_THREAD);
  for (guint i = 0; i < N_THREADS; i++)
    df_session_end (ss[i]);
  df_sessions_free (s);
}

static void
test_no_export_yet (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *ss = df_session_start (s, "nbd", "unix");
  JsonNode *node;
  JsonObject *o;

  /* before negotiation: counted on the session only, no crash */
  df_session_account (ss, DF_OP_READ, 100, 1, false);
  df_session_quota_hit (ss);
  node = df_sessions_to_json (s);
  o = json_array_get_object_element (json_node_get_array (node), 0);
  g_assert_true (json_object_get_null_member (o, "export"));
  g_assert_cmpint (json_object_get_int_member (o, "ops"), ==, 1);
  json_node_unref (node);
  g_autoptr (GString) out = metrics_of (s);
  g_assert_null (strstr (out->str, "diskfarm_ops_total{"));
  g_assert_cmpint (tu_metric_value (out->str, "diskfarm_sessions"), ==, 1);
  df_session_end (ss);
  df_sessions_free (s);
}

/* A device reached by MAC and by name is one metrics series, labelled by
 * its name; the session itself keeps the export name the client used. */
static void
test_device_label (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *a = df_session_start (s, "nbd", "127.0.0.1:1");
  DfSession *b = df_session_start (s, "iscsi", "127.0.0.1:2");

  df_session_set_export (a, "device/52:54:00:12:34:56", "pc01");
  df_session_set_export (b, "device/pc01", "pc01");
  df_session_account (a, DF_OP_READ, 4096, 1000, false);
  df_session_account (b, DF_OP_READ, 4096, 1000, false);
  g_autoptr (GString) out = metrics_of (s);
  g_assert_cmpint (ops_total (out->str, "device/pc01", "read"), ==, 2);
  g_assert_null (strstr (out->str, "device/52:54"));
  g_autoptr (JsonNode) j = df_sessions_to_json (s);
  g_autofree char *text = json_to_string (j, FALSE);
  g_assert_nonnull (strstr (text, "\"device/52:54:00:12:34:56\""));
  df_session_end (a);
  df_session_end (b);
  df_sessions_free (s);
}

/* The binding fields of /v1/sessions: a device session, a vdisk session,
 * a session not bound yet. */
static void
test_binding_json (void)
{
  DfSessions *s = df_sessions_new ();
  DfSession *d = df_session_start (s, "nbd", "unix");
  DfSession *v = df_session_start (s, "iscsi", "10.0.0.9:3260");
  DfSession *n = df_session_start (s, "nbd", "unix");
  const DfExportBinding bd = { "m1", 7, "win10", 3, "server-persistent",
                               true };
  const DfExportBinding bv = { NULL, -1, "win10", 2, NULL, false };
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) err = NULL;
  g_autofree char *text = NULL;
  JsonNode *node;
  JsonArray *arr;
  JsonObject *o;

  df_session_set_export (d, "device/m1", "m1");
  df_session_set_binding (d, &bd);
  df_session_set_export (v, "vdisk/win10@2", NULL);
  df_session_set_binding (v, &bv);
  node = df_sessions_to_json (s);
  text = json_to_string (node, FALSE);
  json_node_unref (node);
  g_assert_true (json_parser_load_from_data (p, text, -1, &err));
  arr = json_node_get_array (json_parser_get_root (p));
  g_assert_cmpuint (json_array_get_length (arr), ==, 3);
  o = json_array_get_object_element (arr, 0);
  g_assert_cmpstr (json_object_get_string_member (o, "device"), ==, "m1");
  g_assert_cmpint (json_object_get_int_member (o, "generation"), ==, 7);
  g_assert_cmpstr (json_object_get_string_member (o, "vdisk"), ==, "win10");
  g_assert_cmpint (json_object_get_int_member (o, "version"), ==, 3);
  g_assert_cmpstr (json_object_get_string_member (o, "cache"), ==,
                   "server-persistent");
  g_assert_true (json_object_get_boolean_member (o, "maintenance"));
  o = json_array_get_object_element (arr, 1);
  g_assert_true (json_object_get_null_member (o, "device"));
  g_assert_true (json_object_get_null_member (o, "generation"));
  g_assert_cmpstr (json_object_get_string_member (o, "vdisk"), ==, "win10");
  g_assert_cmpint (json_object_get_int_member (o, "version"), ==, 2);
  g_assert_true (json_object_get_null_member (o, "cache"));
  g_assert_false (json_object_get_boolean_member (o, "maintenance"));
  o = json_array_get_object_element (arr, 2);
  g_assert_true (json_object_get_null_member (o, "vdisk"));
  g_assert_true (json_object_get_null_member (o, "version"));
  g_assert_true (json_object_get_null_member (o, "generation"));
  g_assert_false (json_object_get_boolean_member (o, "maintenance"));
  df_session_end (d);
  df_session_end (v);
  df_session_end (n);
  df_sessions_free (s);
}

static const TuTest tests[] = {
  { "/sessions/json", test_json },
  { "/sessions/histogram-buckets", test_histogram_buckets },
  { "/sessions/metrics-text", test_metrics_text },
  { "/sessions/label-escaping", test_label_escaping },
  { "/sessions/concurrent-accounting", test_concurrent_accounting },
  { "/sessions/no-export-yet", test_no_export_yet },
  { "/sessions/device-label", test_device_label },
  { "/sessions/binding-json", test_binding_json },
};

TU_MAIN (tests)
