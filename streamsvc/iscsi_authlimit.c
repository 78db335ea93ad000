/* streamsvc: failed CHAP logins, counted per source address (see
 * iscsi_int.h "CHAP rate limit").
 *
 * After ISCSI_AUTH_MAX_FAILS wrong CHAP answers from one address (with no
 * success between), that address is locked out: every login from it is
 * refused at once for ISCSI_AUTH_LOCK_S seconds, doubled at each further
 * lockout up to ISCSI_AUTH_LOCK_MAX_S.  A lockout is logged once, when it
 * starts; the refusals during it are not (a guessing loop cannot flood the
 * log).  Other addresses are not affected.  The table holds at most
 * ISCSI_AUTH_MAX_SOURCES addresses; entries idle for ISCSI_AUTH_FORGET_S
 * and not locked are dropped first. */
#define G_LOG_DOMAIN "streamsvc"

#include "iscsi_int.h"

#include <string.h>

typedef struct
{
  guint failures;     /* wrong answers since the last success/lockout */
  guint lockouts;     /* lockouts so far (the next lasts longer) */
  gint64 last;        /* monotonic µs of the last failure */
  gint64 locked_until; /* monotonic µs, 0: not locked */
} auth_source;

char *
iscsi_source_address (const char *client)
{
  const char *close, *colon;

  if (client[0] == '[' && (close = strchr (client, ']')) != NULL)
    return g_strndup (client + 1, (gsize)(close - client - 1));
  colon = strrchr (client, ':');
  return colon ? g_strndup (client, (gsize)(colon - client))
               : g_strdup (client);
}

void
iscsi_authlimit_init (DfIscsiTarget *t)
{
  g_mutex_init (&t->auth_lock);
  t->auth_sources = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                           g_free);
}

void
iscsi_authlimit_clear (DfIscsiTarget *t)
{
  g_hash_table_destroy (t->auth_sources);
  g_mutex_clear (&t->auth_lock);
}

static gboolean
forgettable (gpointer key, gpointer value, gpointer now_p)
{
  const auth_source *s = value;
  gint64 now = *(gint64 *)now_p;

  return s->locked_until <= now
         && now - s->last > ISCSI_AUTH_FORGET_S * G_TIME_SPAN_SECOND;
}

/* The entry of source, created (room made) when missing. */
static auth_source *
source_get_locked (DfIscsiTarget *t, const char *source, gint64 now)
{
  auth_source *s = g_hash_table_lookup (t->auth_sources, source);

  if (s != NULL)
    return s;
  if (g_hash_table_size (t->auth_sources) >= ISCSI_AUTH_MAX_SOURCES)
    g_hash_table_foreach_remove (t->auth_sources, forgettable, &now);
  if (g_hash_table_size (t->auth_sources) >= ISCSI_AUTH_MAX_SOURCES)
    return NULL; /* full of recent guessers: count no more */
  s = g_new0 (auth_source, 1);
  g_hash_table_insert (t->auth_sources, g_strdup (source), s);
  return s;
}

guint
iscsi_authlimit_locked (DfIscsiTarget *t, const char *source)
{
  gint64 now = g_get_monotonic_time ();
  guint left = 0;

  g_mutex_lock (&t->auth_lock);
  auth_source *s = g_hash_table_lookup (t->auth_sources, source);
  if (s != NULL && s->locked_until > now)
    left = (guint)((s->locked_until - now + G_TIME_SPAN_SECOND - 1)
                   / G_TIME_SPAN_SECOND);
  g_mutex_unlock (&t->auth_lock);
  return left;
}

guint
iscsi_authlimit_failed (DfIscsiTarget *t, const char *source)
{
  gint64 now = g_get_monotonic_time ();
  guint lock_s = 0;

  g_mutex_lock (&t->auth_lock);
  auth_source *s = source_get_locked (t, source, now);
  if (s != NULL)
    {
      s->last = now;
      if (++s->failures >= ISCSI_AUTH_MAX_FAILS)
        {
          lock_s = ISCSI_AUTH_LOCK_S << MIN (s->lockouts, 8u);
          lock_s = MIN (lock_s, ISCSI_AUTH_LOCK_MAX_S);
          s->locked_until = now + (gint64)lock_s * G_TIME_SPAN_SECOND;
          s->lockouts++;
          s->failures = 0;
        }
    }
  g_mutex_unlock (&t->auth_lock);
  return lock_s;
}

void
iscsi_authlimit_succeeded (DfIscsiTarget *t, const char *source)
{
  g_mutex_lock (&t->auth_lock);
  g_hash_table_remove (t->auth_sources, source);
  g_mutex_unlock (&t->auth_lock);
}
