/* streamsvc: live sessions and per-export counters (see sessions.h).
 *
 * Locking: one mutex (DfSessions.lock) protects the session set and the
 * two counter tables; it is taken at session start/end, at set_export and
 * by readers (admin HTTP).  The request path (df_session_account) takes no
 * lock: each session holds a pointer to its export's counters, which live
 * as long as the DfSessions, and adds to them with relaxed atomics. */
#include "sessions.h"

#include <string.h>

/* Latency buckets (upper bounds, inclusive, in ns) and their "le" labels.
 * The last bucket is +Inf. */
static const uint64_t bucket_bound_ns[] = {
  50000,    100000,   250000,   500000,    1000000,   2500000,    5000000,
  10000000, 25000000, 50000000, 100000000, 250000000, 1000000000, UINT64_MAX,
};
static const char *const bucket_le[] = {
  "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
  "0.01",    "0.025",  "0.05",    "0.1",    "0.25",  "1",      "+Inf",
};
#define N_BUCKETS G_N_ELEMENTS (bucket_bound_ns)
G_STATIC_ASSERT (G_N_ELEMENTS (bucket_le) == N_BUCKETS);

static const char *const op_names[DF_OP__COUNT] = {
  [DF_OP_READ] = "read",   [DF_OP_WRITE] = "write",
  [DF_OP_FLUSH] = "flush", [DF_OP_TRIM] = "trim",
  [DF_OP_ZERO] = "zero",   [DF_OP_BLOCK_STATUS] = "block_status",
};

/* Counters of one export name; updated with atomics only. */
typedef struct
{
  uint64_t ops[DF_OP__COUNT];
  uint64_t errors;
  uint64_t bytes_read;
  uint64_t bytes_written;
  uint64_t buckets[N_BUCKETS]; /* per bucket, not cumulative */
  uint64_t latency_sum_ns;
} ExportCounters;

/* Counters of one device. */
typedef struct
{
  uint64_t quota_refusals;
} DeviceCounters;

struct DfSessions
{
  GMutex lock;
  GHashTable *live;    /* DfSession* set; sessions owned here */
  GHashTable *exports; /* name -> ExportCounters* (owned) */
  GHashTable *devices; /* name -> DeviceCounters* (owned) */
  uint64_t next_id;    /* under lock */
};

struct DfSession
{
  DfSessions *owner;
  uint64_t id;
  char *proto;
  char *client;
  char *export_name; /* under owner->lock; NULL until negotiated */
  char *device;      /* under owner->lock; nullable */
  char *vdisk;       /* binding, under owner->lock; NULL until bound */
  int version;
  gint64 generation; /* -1: none (vdisk export) */
  char *cache;       /* nullable */
  bool maintenance;
  GDateTime *started;
  ExportCounters *counters; /* atomic pointer; NULL until set_export */
  DeviceCounters *dev;      /* atomic pointer; nullable */
  uint64_t bytes_read;      /* atomics */
  uint64_t bytes_written;
  uint64_t ops;
};

#define ATOMIC_ADD(p, v) __atomic_fetch_add ((p), (v), __ATOMIC_RELAXED)
#define ATOMIC_GET(p) __atomic_load_n ((p), __ATOMIC_RELAXED)

static void
session_free (DfSession *ss)
{
  g_free (ss->proto);
  g_free (ss->client);
  g_free (ss->export_name);
  g_free (ss->device);
  g_free (ss->vdisk);
  g_free (ss->cache);
  g_date_time_unref (ss->started);
  g_free (ss);
}

DfSessions *
df_sessions_new (void)
{
  DfSessions *s = g_new0 (DfSessions, 1);

  g_mutex_init (&s->lock);
  s->live
      = g_hash_table_new_full (NULL, NULL, (GDestroyNotify)session_free, NULL);
  s->exports = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  s->devices = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  s->next_id = 1;
  return s;
}

/* Sessions should be ended first; any left are freed here. */
void
df_sessions_free (DfSessions *s)
{
  if (s == NULL)
    return;
  g_hash_table_destroy (s->live);
  g_hash_table_destroy (s->exports);
  g_hash_table_destroy (s->devices);
  g_mutex_clear (&s->lock);
  g_free (s);
}

/* Returns a session owned by s until df_session_end. */
DfSession *
df_session_start (DfSessions *s, const char *proto, const char *client)
{
  DfSession *ss = g_new0 (DfSession, 1);

  ss->owner = s;
  ss->proto = g_strdup (proto);
  ss->client = g_strdup (client);
  ss->started = g_date_time_new_now_utc ();
  ss->generation = -1;
  g_mutex_lock (&s->lock);
  ss->id = s->next_id++;
  g_hash_table_add (s->live, ss);
  g_mutex_unlock (&s->lock);
  return ss;
}

/* The counters of name in table (s->exports or s->devices), made (zeroed,
 * size bytes) on first use; caller holds s->lock. */
static gpointer
counters_locked (GHashTable *table, const char *name, gsize size)
{
  gpointer c = g_hash_table_lookup (table, name);

  if (c == NULL)
    {
      c = g_malloc0 (size);
      g_hash_table_insert (table, g_strdup (name), c);
    }
  return c;
}

static ExportCounters *
export_counters_locked (DfSessions *s, const char *name)
{
  return counters_locked (s->exports, name, sizeof (ExportCounters));
}

static DeviceCounters *
device_counters_locked (DfSessions *s, const char *name)
{
  return counters_locked (s->devices, name, sizeof (DeviceCounters));
}

/* May be called again (NBD_OPT_INFO then GO); the last call wins.  The
 * per-export metrics of a device are labelled "device/<name>" whichever
 * spelling (name or MAC) the client used, so one device is one series. */
void
df_session_set_export (DfSession *ss, const char *export_name,
                       const char *device)
{
  DfSessions *s = ss->owner;

  g_return_if_fail (export_name != NULL);
  g_autofree char *label = device && g_str_has_prefix (export_name, "device/")
                           ? g_strconcat ("device/", device, NULL)
                           : g_strdup (export_name);
  g_mutex_lock (&s->lock);
  g_free (ss->export_name);
  ss->export_name = g_strdup (export_name);
  g_free (ss->device);
  ss->device = g_strdup (device);
  __atomic_store_n (&ss->counters, export_counters_locked (s, label),
                    __ATOMIC_RELEASE);
  __atomic_store_n (&ss->dev,
                    device ? device_counters_locked (s, device) : NULL,
                    __ATOMIC_RELEASE);
  g_mutex_unlock (&s->lock);
}

void
df_session_set_binding (DfSession *ss, const DfExportBinding *b)
{
  DfSessions *s = ss->owner;

  g_mutex_lock (&s->lock);
  g_free (ss->vdisk);
  ss->vdisk = g_strdup (b->vdisk);
  ss->version = b->version;
  ss->generation = b->generation;
  g_free (ss->cache);
  ss->cache = g_strdup (b->cache);
  ss->maintenance = b->maintenance;
  g_mutex_unlock (&s->lock);
}

static guint
bucket_index (uint64_t latency_ns)
{
  guint i = 0;

  while (latency_ns > bucket_bound_ns[i])
    i++;
  return i; /* the last bound is UINT64_MAX */
}

/* Hot path: atomics only, no lock. */
void
df_session_account (DfSession *ss, DfOp op, uint64_t bytes,
                    uint64_t latency_ns, bool failed)
{
  ExportCounters *c = __atomic_load_n (&ss->counters, __ATOMIC_ACQUIRE);

  g_assert ((guint)op < DF_OP__COUNT);
  ATOMIC_ADD (&ss->ops, 1);
  if (op == DF_OP_READ && !failed)
    ATOMIC_ADD (&ss->bytes_read, bytes);
  else if (op == DF_OP_WRITE && !failed)
    ATOMIC_ADD (&ss->bytes_written, bytes);
  if (c == NULL)
    return; /* no export negotiated: nothing to attribute it to */
  ATOMIC_ADD (&c->ops[op], 1);
  if (failed)
    ATOMIC_ADD (&c->errors, 1);
  else if (op == DF_OP_READ)
    ATOMIC_ADD (&c->bytes_read, bytes);
  else if (op == DF_OP_WRITE)
    ATOMIC_ADD (&c->bytes_written, bytes);
  ATOMIC_ADD (&c->buckets[bucket_index (latency_ns)], 1);
  ATOMIC_ADD (&c->latency_sum_ns, latency_ns);
}

void
df_session_quota_hit (DfSession *ss)
{
  DeviceCounters *d = __atomic_load_n (&ss->dev, __ATOMIC_ACQUIRE);

  if (d != NULL)
    ATOMIC_ADD (&d->quota_refusals, 1);
}

/* Frees ss. */
void
df_session_end (DfSession *ss)
{
  DfSessions *s;

  if (ss == NULL)
    return;
  s = ss->owner;
  g_mutex_lock (&s->lock);
  g_hash_table_remove (s->live, ss);
  g_mutex_unlock (&s->lock);
}

guint
df_sessions_count (DfSessions *s)
{
  guint n;

  g_mutex_lock (&s->lock);
  n = g_hash_table_size (s->live);
  g_mutex_unlock (&s->lock);
  return n;
}

uint64_t
df_sessions_bytes_total (DfSessions *s)
{
  GHashTableIter it;
  gpointer v;
  uint64_t total = 0;

  g_mutex_lock (&s->lock);
  g_hash_table_iter_init (&it, s->exports);
  while (g_hash_table_iter_next (&it, NULL, &v))
    {
      ExportCounters *c = v;

      total += ATOMIC_GET (&c->bytes_read) + ATOMIC_GET (&c->bytes_written);
    }
  g_mutex_unlock (&s->lock);
  return total;
}

/* ---- JSON ---------------------------------------------------------- */

static int
session_cmp_id (const void *a, const void *b)
{
  const DfSession *x = *(DfSession *const *)a;
  const DfSession *y = *(DfSession *const *)b;

  return x->id < y->id ? -1 : x->id > y->id;
}

static void
add_nullable_string (JsonBuilder *b, const char *member, const char *value)
{
  json_builder_set_member_name (b, member);
  if (value != NULL)
    json_builder_add_string_value (b, value);
  else
    json_builder_add_null_value (b);
}

/* value, or null when it is not known. */
static void
add_nullable_int (JsonBuilder *b, const char *member, bool known,
                  gint64 value)
{
  json_builder_set_member_name (b, member);
  if (known)
    json_builder_add_int_value (b, value);
  else
    json_builder_add_null_value (b);
}

/* Caller holds s->lock. */
static void
session_to_json (JsonBuilder *b, DfSession *ss)
{
  g_autofree char *started = g_date_time_format_iso8601 (ss->started);

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "id");
  json_builder_add_int_value (b, (gint64)ss->id);
  json_builder_set_member_name (b, "proto");
  json_builder_add_string_value (b, ss->proto);
  json_builder_set_member_name (b, "client");
  json_builder_add_string_value (b, ss->client);
  add_nullable_string (b, "export", ss->export_name);
  add_nullable_string (b, "device", ss->device);
  add_nullable_string (b, "vdisk", ss->vdisk);
  add_nullable_int (b, "version", ss->vdisk != NULL, ss->version);
  add_nullable_int (b, "generation", ss->generation >= 0, ss->generation);
  add_nullable_string (b, "cache", ss->cache);
  json_builder_set_member_name (b, "maintenance");
  json_builder_add_boolean_value (b, ss->maintenance);
  json_builder_set_member_name (b, "started");
  json_builder_add_string_value (b, started);
  json_builder_set_member_name (b, "bytes_read");
  json_builder_add_int_value (b, (gint64)ATOMIC_GET (&ss->bytes_read));
  json_builder_set_member_name (b, "bytes_written");
  json_builder_add_int_value (b, (gint64)ATOMIC_GET (&ss->bytes_written));
  json_builder_set_member_name (b, "ops");
  json_builder_add_int_value (b, (gint64)ATOMIC_GET (&ss->ops));
  json_builder_end_object (b);
}

/* Returns a new JSON array node (json_node_unref), sessions by id. */
JsonNode *
df_sessions_to_json (DfSessions *s)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autofree gpointer *list = NULL;
  guint n;

  json_builder_begin_array (b);
  g_mutex_lock (&s->lock);
  list = g_hash_table_get_keys_as_array (s->live, &n);
  qsort (list, n, sizeof *list, session_cmp_id);
  for (guint i = 0; i < n; i++)
    session_to_json (b, list[i]);
  g_mutex_unlock (&s->lock);
  json_builder_end_array (b);
  return json_builder_get_root (b);
}

/* ---- Prometheus text ------------------------------------------------ */

void
df_prom_append_escaped (GString *out, const char *value)
{
  for (const char *p = value; *p; p++)
    {
      if (*p == '\\')
        g_string_append (out, "\\\\");
      else if (*p == '"')
        g_string_append (out, "\\\"");
      else if (*p == '\n')
        g_string_append (out, "\\n");
      else
        g_string_append_c (out, *p);
    }
}

void
df_prom_family_header (GString *out, const char *name, const char *type,
                       const char *help)
{
  g_string_append_printf (out, "# HELP %s %s\n# TYPE %s %s\n", name, help,
                          name, type);
}

/* Appends 'name{key="value"' (no closing brace) to out. */
static void
sample_open (GString *out, const char *name, const char *key,
             const char *value)
{
  g_string_append_printf (out, "%s{%s=\"", name, key);
  df_prom_append_escaped (out, value);
  g_string_append_c (out, '"');
}

static int
strcmp_ptr (const void *a, const void *b)
{
  return strcmp (*(const char *const *)a, *(const char *const *)b);
}

/* Sorted names of a counter table; caller holds the lock.  The strings
 * are borrowed from the table (keys are never removed while s lives). */
static const char **
sorted_keys (GHashTable *t, guint *n)
{
  const char **keys = (const char **)g_hash_table_get_keys_as_array (t, n);

  qsort (keys, *n, sizeof *keys, strcmp_ptr);
  return keys;
}

static void
metrics_ops (GString *out, GHashTable *exports, const char **names, guint n)
{
  df_prom_family_header (out, "diskfarm_ops_total", "counter",
                         "Requests completed, by export and operation.");
  for (guint i = 0; i < n; i++)
    {
      ExportCounters *c = g_hash_table_lookup (exports, names[i]);

      for (guint op = 0; op < DF_OP__COUNT; op++)
        {
          sample_open (out, "diskfarm_ops_total", "export", names[i]);
          g_string_append_printf (out, ",op=\"%s\"} %" G_GUINT64_FORMAT "\n",
                                  op_names[op], ATOMIC_GET (&c->ops[op]));
        }
    }
  df_prom_family_header (out, "diskfarm_errors_total", "counter",
                         "Requests that failed, by export.");
  for (guint i = 0; i < n; i++)
    {
      ExportCounters *c = g_hash_table_lookup (exports, names[i]);

      sample_open (out, "diskfarm_errors_total", "export", names[i]);
      g_string_append_printf (out, "} %" G_GUINT64_FORMAT "\n",
                              ATOMIC_GET (&c->errors));
    }
}

static void
metrics_bytes (GString *out, GHashTable *exports, const char **names, guint n)
{
  df_prom_family_header (out, "diskfarm_bytes_total", "counter",
                         "Bytes moved by successful requests, by export and "
                         "direction.");
  for (guint i = 0; i < n; i++)
    {
      ExportCounters *c = g_hash_table_lookup (exports, names[i]);

      sample_open (out, "diskfarm_bytes_total", "export", names[i]);
      g_string_append_printf (out,
                              ",direction=\"read\"} %" G_GUINT64_FORMAT "\n",
                              ATOMIC_GET (&c->bytes_read));
      sample_open (out, "diskfarm_bytes_total", "export", names[i]);
      g_string_append_printf (out,
                              ",direction=\"write\"} %" G_GUINT64_FORMAT "\n",
                              ATOMIC_GET (&c->bytes_written));
    }
}

/* One export's histogram: cumulative buckets from one snapshot, so that
 * _count always equals the +Inf bucket. */
static void
metrics_histogram_one (GString *out, const char *name, ExportCounters *c)
{
  uint64_t cumulative = 0;
  uint64_t sum_ns = ATOMIC_GET (&c->latency_sum_ns);

  for (guint b = 0; b < N_BUCKETS; b++)
    {
      cumulative += ATOMIC_GET (&c->buckets[b]);
      sample_open (out, "diskfarm_request_duration_seconds_bucket", "export",
                   name);
      g_string_append_printf (out, ",le=\"%s\"} %" G_GUINT64_FORMAT "\n",
                              bucket_le[b], cumulative);
    }
  sample_open (out, "diskfarm_request_duration_seconds_sum", "export", name);
  g_string_append_printf (out,
                          "} %" G_GUINT64_FORMAT ".%09" G_GUINT64_FORMAT "\n",
                          sum_ns / 1000000000u, sum_ns % 1000000000u);
  sample_open (out, "diskfarm_request_duration_seconds_count", "export", name);
  g_string_append_printf (out, "} %" G_GUINT64_FORMAT "\n", cumulative);
}

static void
metrics_histogram (GString *out, GHashTable *exports, const char **names,
                   guint n)
{
  df_prom_family_header (out, "diskfarm_request_duration_seconds",
                         "histogram", "Request latency from decoded request "
                         "to reply, by export.");
  for (guint i = 0; i < n; i++)
    metrics_histogram_one (out, names[i],
                           g_hash_table_lookup (exports, names[i]));
}

static void
metrics_devices (GString *out, GHashTable *devices)
{
  guint n;
  g_autofree const char **names = sorted_keys (devices, &n);

  df_prom_family_header (out, "diskfarm_quota_refusals_total", "counter",
                         "Writes refused with ENOSPC because of the device "
                         "quota.");
  for (guint i = 0; i < n; i++)
    {
      DeviceCounters *d = g_hash_table_lookup (devices, names[i]);

      sample_open (out, "diskfarm_quota_refusals_total", "device", names[i]);
      g_string_append_printf (out, "} %" G_GUINT64_FORMAT "\n",
                              ATOMIC_GET (&d->quota_refusals));
    }
}

/* Appends the session metric families to out (exposition format 0.0.4). */
void
df_sessions_metrics (DfSessions *s, GString *out)
{
  guint n;

  g_mutex_lock (&s->lock);
  {
    g_autofree const char **names = sorted_keys (s->exports, &n);

    metrics_ops (out, s->exports, names, n);
    metrics_bytes (out, s->exports, names, n);
    metrics_histogram (out, s->exports, names, n);
  }
  metrics_devices (out, s->devices);
  df_prom_family_header (out, "diskfarm_sessions", "gauge", "Live sessions.");
  g_string_append_printf (out, "diskfarm_sessions %u\n",
                          g_hash_table_size (s->live));
  g_mutex_unlock (&s->lock);
}
