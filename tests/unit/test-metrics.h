/* diskfarm: reading the Prometheus text of streamsvc/sessions.c in the
 * unit tests (test-sessions, test-layers).  Header-only: static inline. */
#pragma once

#include <glib.h>
#include <string.h>

#include "sessions.h"

/* Value of the sample whose full "name{labels}" text equals key, or -1. */
static inline gint64
tu_metric_value (const char *text, const char *key)
{
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  size_t klen = strlen (key);

  for (guint i = 0; lines[i] != NULL; i++)
    if (strncmp (lines[i], key, klen) == 0 && lines[i][klen] == ' ')
      return g_ascii_strtoll (lines[i] + klen + 1, NULL, 10);
  return -1;
}

/* The exposition text of s (newly allocated, g_free). */
static inline char *
tu_metrics_text (DfSessions *s)
{
  GString *out = g_string_new (NULL);

  df_sessions_metrics (s, out);
  return g_string_free (out, FALSE);
}
