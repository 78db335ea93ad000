/* diskfarm: row and audit-detail helpers shared by the entity files of
 * lib/farm, over the DB seam (db.h).  Declared in farm-private.h.  They
 * only borrow the DfFarm and the statement; nothing here keeps state. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <stdarg.h>
#include <string.h>

/* ---- statements and rows ---------------------------------------------- */

DfDbStmt *
df_farm_stmt (DfFarm *farm, const char *sql, GError **err)
{
  return df_db_prepare (df_farm_db (farm), sql, err);
}

DfDbStmt *
df_farm_query (DfFarm *farm, const char *sql, const DfParam *params, gsize n,
               GError **err)
{
  DfDbStmt *st = df_farm_stmt (farm, sql, err);
  if (!st)
    return NULL;
  for (gsize i = 0; i < n; i++)
    if (params[i].is_text)
      df_db_bind_text (st, (int) i + 1, params[i].text);
    else
      df_db_bind_int64 (st, (int) i + 1, params[i].num);
  return st;
}

bool
df_farm_exec (DfFarm *farm, const char *sql, const DfParam *params, gsize n,
              GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_query (farm, sql, params, n, err);
  return st && df_db_run (st, err);
}

gpointer
df_farm_row_read (DfDbStmt *st, const DfRowType *rt)
{
  char *obj = g_malloc0 (rt->size);
  for (gsize i = 0; i < rt->n_fields; i++)
    {
      void *field = obj + rt->fields[i].offset;
      switch (rt->fields[i].kind)
        {
        case DF_FIELD_SKIP:
          break;
        case DF_FIELD_INT64:
          *(gint64 *) field = df_db_col_int64 (st, (int) i);
          break;
        case DF_FIELD_INT:
          *(int *) field = df_db_col_int (st, (int) i);
          break;
        case DF_FIELD_PORT:
          *(guint16 *) field = (guint16) df_db_col_int (st, (int) i);
          break;
        case DF_FIELD_BOOL:
          *(bool *) field = df_db_col_int (st, (int) i) != 0;
          break;
        case DF_FIELD_TEXT:
          *(char **) field = df_db_col_dup (st, (int) i);
          break;
        }
    }
  if (rt->finish)
    rt->finish (obj, st);
  return obj;
}

void
df_farm_row_free (const DfRowType *rt, gpointer obj)
{
  if (!obj)
    return;
  for (gsize i = 0; i < rt->n_fields; i++)
    if (rt->fields[i].kind == DF_FIELD_TEXT)
      g_free (*(char **) ((char *) obj + rt->fields[i].offset));
  g_free (obj);
}

/* Step st once: its next row as a new struct of rt, or NULL (see
 * df_farm_select_one). */
static gpointer
row_next (DfDbStmt *st, const DfRowType *rt, GError **err)
{
  return df_db_step (st, err) == 1 ? df_farm_row_read (st, rt) : NULL;
}

GPtrArray *
df_farm_rows (DfDbStmt *st, const DfRowType *rt, GError **err)
{
  g_autoptr (GPtrArray) out = g_ptr_array_new_with_free_func (rt->free);
  int r;
  while ((r = df_db_step (st, err)) == 1)
    g_ptr_array_add (out, df_farm_row_read (st, rt));
  return r == 0 ? g_steal_pointer (&out) : NULL;
}

GPtrArray *
df_farm_select (DfFarm *farm, const char *sql, const DfParam *params,
                gsize n, const DfRowType *rt, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_query (farm, sql, params, n, err);
  return st ? df_farm_rows (st, rt, err) : NULL;
}

gpointer
df_farm_select_one (DfFarm *farm, const char *sql, const DfParam *params,
                    gsize n, const DfRowType *rt, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_query (farm, sql, params, n, err);
  return st ? row_next (st, rt, err) : NULL;
}

gpointer
df_farm_row_find (DfFarm *farm, const char *sql, const char *key,
                  const DfRowType *rt, GError **err)
{
  const DfParam p[] = { DF_TEXT (key) };
  return df_farm_select_one (farm, sql, p, G_N_ELEMENTS (p), rt, err);
}

gpointer
df_farm_row_named (DfFarm *farm, const char *sql, const char *what,
                   const char *name, const DfRowType *rt, GError **err)
{
  GError *local = NULL;
  gpointer row = df_farm_row_find (farm, sql, name, rt, &local);
  if (!row && !local)
    g_set_error (&local, DF_ERROR, DF_ERROR_NOT_FOUND, "no %s named '%s'",
                 what, name);
  if (local)
    g_propagate_error (err, local);
  return row;
}

bool
df_farm_changed_row (DfFarm *farm, GError **err, const char *fmt, ...)
{
  if (df_db_changes (df_farm_db (farm)) > 0)
    return true;
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  g_set_error_literal (err, DF_ERROR, DF_ERROR_NOT_FOUND, msg);
  return false;
}

bool
df_farm_lookup_id (DfFarm *farm, const char *what, const char *sql,
                   const char *name, gint64 *id, GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm, sql, err);
  if (!st)
    return false;
  df_db_bind_text (st, 1, name);
  int r = df_db_step (st, err);
  if (r < 0)
    return false;
  if (r == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND, "no %s named '%s'",
                   what, name);
      return false;
    }
  *id = df_db_col_int64 (st, 0);
  return true;
}

bool
df_farm_names_using (DfFarm *farm, const char *sql, gint64 id, char **out,
                     GError **err)
{
  g_autoptr (DfDbStmt) st = df_farm_stmt (farm, sql, err);
  if (!st)
    return false;
  df_db_bind_int64 (st, 1, id);
  g_autoptr (GString) gs = g_string_new (NULL);
  int r;
  while ((r = df_db_step (st, err)) == 1)
    g_string_append_printf (gs, "%s%s", gs->len ? ", " : "",
                            df_db_col_text (st, 0));
  if (r < 0)
    return false;
  *out = gs->len ? g_string_free (g_steal_pointer (&gs), FALSE) : NULL;
  return true;
}

bool
df_farm_delete_audited (DfFarm *farm, const char *sql, gint64 id,
                        const char *action, const char *object, GError **err)
{
  const DfParam p[] = { DF_INT (id) };
  return df_farm_exec (farm, sql, p, G_N_ELEMENTS (p), err)
         && df_farm_audit_row (farm, action, object, NULL, err);
}

/* ---- small helpers ---------------------------------------------------- */

char *
df_farm_now (void)
{
  g_autoptr (GDateTime) dt = g_date_time_new_now_utc ();
  return g_date_time_format (dt, "%Y-%m-%dT%H:%M:%SZ");
}

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

void
df_farm_json_kv (GString *gs, const char *key, const char *val)
{
  if (gs->len > 1)
    g_string_append_c (gs, ',');
  df_farm_json_str (gs, key);
  g_string_append_c (gs, ':');
  df_farm_json_str (gs, val);
}

void
df_farm_json_kv_int (GString *gs, const char *key, gint64 val)
{
  if (gs->len > 1)
    g_string_append_c (gs, ',');
  df_farm_json_str (gs, key);
  g_string_append_printf (gs, ":%" G_GINT64_FORMAT, val);
}

char *
df_farm_json_close (GString *gs)
{
  g_string_append_c (gs, '}');
  return g_string_free (gs, FALSE);
}

bool
df_farm_check_size (const char *what, uint64_t v, bool zero_ok, GError **err)
{
  if (v > (uint64_t) G_MAXINT64 || (!zero_ok && v == 0))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s %" G_GUINT64_FORMAT " is out of range", what, v);
      return false;
    }
  return true;
}
