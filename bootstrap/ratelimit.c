/* diskfarm bootstrap: rate limits.  See ratelimit.h. */
#include "ratelimit.h"

typedef struct {
  gint64 window_us;         /* start of the source's window */
  guint count;
} Window;

struct DfRateLimit {
  guint per_source, total;
  gint64 window_len_us;
  Window all;
  GHashTable *sources;      /* source (owned) -> Window (owned) */
};

DfRateLimit *
df_rate_limit_new (guint per_source, guint total, guint window_s)
{
  DfRateLimit *r = g_new0 (DfRateLimit, 1);
  r->per_source = per_source;
  r->total = total;
  r->window_len_us = (gint64) window_s * G_USEC_PER_SEC;
  r->all.window_us = G_MININT64 / 2;
  r->sources = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                      g_free);
  return r;
}

void
df_rate_limit_free (DfRateLimit *r)
{
  if (!r)
    return;
  g_hash_table_destroy (r->sources);
  g_free (r);
}

/* Restart w when its window is over. */
static void
roll (const DfRateLimit *r, Window *w, gint64 now_us)
{
  if (now_us - w->window_us >= r->window_len_us)
    {
      w->window_us = now_us;
      w->count = 0;
    }
}

DfRateResult
df_rate_limit_take (DfRateLimit *r, const char *source, gint64 now_us)
{
  roll (r, &r->all, now_us);
  if (r->all.count == 0)
    g_hash_table_remove_all (r->sources);   /* a new window: forget all */
  Window *w = g_hash_table_lookup (r->sources, source);
  if (!w)
    {
      w = g_new0 (Window, 1);
      w->window_us = now_us;
      g_hash_table_insert (r->sources, g_strdup (source), w);
    }
  roll (r, w, now_us);
  if (w->count >= r->per_source)
    return DF_RATE_SOURCE;
  if (r->all.count >= r->total)
    return DF_RATE_TOTAL;
  w->count++;
  r->all.count++;
  return DF_RATE_OK;
}

bool
df_log_burst_allow (DfLogBurst *l, gint64 now_us)
{
  if (now_us - l->window_us > G_USEC_PER_SEC)
    {
      l->window_us = now_us;
      l->count = 0;
    }
  return ++l->count <= DF_LOG_BURST_PER_S;
}
