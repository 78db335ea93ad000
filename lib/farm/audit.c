/* diskfarm: the audit log of the farm DB: one row per change, written by
 * the mutator inside its own write scope, read newest first. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"

#include <string.h>

/* ---- audit ------------------------------------------------------------ */

bool
df_farm_audit_row (DfFarm *farm, const char *action, const char *object,
                   const char *detail, GError **err)
{
  g_autofree char *at = df_farm_now ();
  const DfParam p[] = { DF_TEXT (at), DF_TEXT (df_farm_who (farm)),
                        DF_TEXT (action), DF_TEXT (object), DF_TEXT (detail) };
  /* Every change has its audit row: the one place that tells the servers
   * listening (watch.c), at the commit of this very transaction. */
  return df_farm_exec (farm, "INSERT INTO audit (at, who, action, object, "
                       "detail) VALUES (?, ?, ?, ?, ?)", p, G_N_ELEMENTS (p),
                       err)
         && df_db_notify (df_farm_db (farm), DF_FARM_CHANNEL, action, err);
}

bool
df_farm_audit (DfFarm *farm, const char *action, const char *object,
               const char *detail, GError **err)
{
  if (!action || !*action || !object)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "an audit entry needs an action and an object");
      return false;
    }
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = df_farm_audit_row (farm, action, object, detail, err);
  return t.ok;
}

/* The fields of an audit SELECT (id, at, who, action, object, detail). */
static const DfField audit_fields[] = {
  DF_FIELD (INT64, DfAudit, id),
  DF_FIELD (TEXT, DfAudit, at),
  DF_FIELD (TEXT, DfAudit, who),
  DF_FIELD (TEXT, DfAudit, action),
  DF_FIELD (TEXT, DfAudit, object),
  DF_FIELD (TEXT, DfAudit, detail),
};

static const DfRowType audit_row =
  DF_ROW_TYPE (DfAudit, audit_fields, NULL, df_audit_free);

void
df_audit_free (DfAudit *a)
{
  df_farm_row_free (&audit_row, a);
}

GPtrArray *
df_farm_audit_query (DfFarm *farm, const DfAuditFilter *f, GError **err)
{
  if (f->since && (strlen (f->since) != 20 || f->since[10] != 'T'
                   || f->since[19] != 'Z'))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "audit: time '%s' is not UTC YYYY-MM-DDTHH:MM:SSZ",
                   f->since);
      return NULL;
    }
  /* Times are stored as "YYYY-MM-DDTHH:MM:SSZ": text order is time order. */
  const DfParam p[] = {
    DF_TEXT (f->object), DF_TEXT (f->action), DF_TEXT (f->since),
    DF_INT (f->limit ? (gint64) f->limit : -1)
  };
  return df_farm_select (farm,
    "SELECT id, at, who, action, object, detail FROM audit "
    "WHERE (CAST (?1 AS TEXT) IS NULL OR object = ?1 "
    "       OR substr (object, 1, length (?1) + 1) = ?1 || '@') "
    "  AND (CAST (?2 AS TEXT) IS NULL OR action = ?2 OR (instr (?2, '.') = 0 "
    "       AND substr (action, 1, length (?2) + 1) = ?2 || '.')) "
    "  AND (CAST (?3 AS TEXT) IS NULL OR at >= ?3) "
    "ORDER BY id DESC LIMIT ?4", p, G_N_ELEMENTS (p), &audit_row, err);
}

GPtrArray *
df_farm_audit_list (DfFarm *farm, guint limit, GError **err)
{
  DfAuditFilter f = { .limit = limit };
  return df_farm_audit_query (farm, &f, err);
}

