/* diskfarm: small SQLite helpers shared by the files of lib/farm (farm.c,
 * servers.c, versions.c, chap.c).  Declared in farm-private.h.  They only
 * borrow the DfFarm and the statement; nothing here keeps state. */
#include "farm.h"
#include "farm-private.h"

sqlite3_stmt *
df_farm_prepare (DfFarm *farm, const char *sql, GError **err)
{
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2 (df_farm_sqlite (farm), sql, -1, &st, NULL);
  if (rc == SQLITE_OK)
    return st;
  df_farm_set_sqlite_error (err, df_farm_sqlite (farm), rc,
                            "farm.db: prepare");
  return NULL;
}

int
df_farm_step (DfFarm *farm, sqlite3_stmt *st, GError **err)
{
  int rc = sqlite3_step (st);
  if (rc == SQLITE_ROW)
    return 1;
  if (rc == SQLITE_DONE)
    return 0;
  df_farm_set_sqlite_error (err, df_farm_sqlite (farm), rc, "farm.db");
  return -1;
}

void
df_sql_bind_text (sqlite3_stmt *st, int i, const char *s)
{
  if (s)
    sqlite3_bind_text (st, i, s, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null (st, i);
}

char *
df_sql_col_dup (sqlite3_stmt *st, int i)
{
  const unsigned char *s = sqlite3_column_text (st, i);
  return s ? g_strdup ((const char *) s) : NULL;
}

char *
df_farm_now (void)
{
  g_autoptr (GDateTime) dt = g_date_time_new_now_utc ();
  return g_date_time_format (dt, "%Y-%m-%dT%H:%M:%SZ");
}

/* Append s as a JSON string literal (or null). */
void
df_farm_json_str (GString *gs, const char *s)
{
  if (!s)
    {
      g_string_append (gs, "null");
      return;
    }
  g_string_append_c (gs, '"');
  for (const unsigned char *p = (const unsigned char *) s; *p; p++)
    {
      if (*p == '"' || *p == '\\')
        g_string_append_printf (gs, "\\%c", *p);
      else if (*p < 0x20)
        g_string_append_printf (gs, "\\u%04x", *p);
      else
        g_string_append_c (gs, (char) *p);
    }
  g_string_append_c (gs, '"');
}
