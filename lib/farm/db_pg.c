/* diskfarm: the PostgreSQL backend of the farm DB seam (db.h), over
 * libpq.
 *
 * The only file of diskfarm that includes libpq-fe.h; db.c hands it the
 * targets that are postgresql:// URIs or conninfo strings.  One
 * connection per DfDb.  The entity files' dialect (db.h) is rewritten once
 * per SQL text into PostgreSQL's and prepared once per connection (both
 * kept in a cache by SQL text); the first step runs it with
 * PQexecPrepared, every parameter sent as text for the server to type
 * from its context, and keeps the whole result for the steps that
 * follow.  Transactions are SERIALIZABLE: a conflict with another writer
 * fails a statement or the COMMIT with SQLSTATE 40001, reported as
 * DF_ERROR_BUSY for lib/farm to re-run the mutator (df_farm_retry).
 *
 * The schema version and the farm's application id live in a one-row
 * table, diskfarm_schema, which df_db_schema_set creates. */
#include "db-backend.h"
#include "common.h"

#include <libpq-fe.h>
#include <string.h>

#define LOCK_TIMEOUT_MS 5000

typedef struct {
  char *text;           /* PostgreSQL's SQL (owned) */
  int nparams;          /* highest $N used */
  char name[24];        /* its prepared statement on the connection */
  bool prepared;
} PgSql;

typedef struct {
  DfDb base;
  PGconn *conn;
  char *name;           /* connection parameters without the password */
  GHashTable *sql;      /* dialect SQL (owned) -> PgSql* (owned) */
  gint64 changes;       /* rows of the last INSERT/UPDATE/DELETE */
  /* The first failure of the open transaction: PostgreSQL fails every
   * later statement with 25P02 "transaction is aborted" until a rollback,
   * and those report this code (so a serialization failure a caller
   * swallowed still ends as DF_ERROR_BUSY). */
  int aborted_code;
  bool busy;            /* the transaction met DF_ERROR_BUSY (a conflict) */
  char *listening;      /* the channel df_db_listen asked for, or NULL */
} PgDb;

typedef struct {
  DfDbStmt base;
  PgDb *db;
  const PgSql *sql;     /* borrowed from db->sql */
  char **values;        /* nparams bound texts (owned; NULL = SQL NULL) */
  PGresult *res;        /* after the first step */
  int row;
} PgStmt;

static const DfDbOps pg_ops;

#define PG_DB(d) ((PgDb *) (d))
#define PG_ST(s) ((PgStmt *) (s))

/* ---- errors ----------------------------------------------------------- */

static int
error_code (const char *state)
{
  if (state == NULL)
    return DF_ERROR_IO;
  if (strcmp (state, "40001") == 0 || strcmp (state, "40P01") == 0
      || strcmp (state, "55P03") == 0)
    return DF_ERROR_BUSY;
  if (strcmp (state, "23505") == 0)
    return DF_ERROR_EXISTS;
  if (g_str_has_prefix (state, "23") || g_str_has_prefix (state, "22")
      || strcmp (state, "P0001") == 0)
    return DF_ERROR_INVALID;
  if (strcmp (state, "XX001") == 0 || strcmp (state, "XX002") == 0)
    return DF_ERROR_CORRUPT;
  if (strcmp (state, "53100") == 0)
    return DF_ERROR_NOSPC;
  return DF_ERROR_IO;
}

/* libpq's connection message, first line only (new string). */
static char *
conn_message (PgDb *db)
{
  g_autofree char *m = g_strdup (PQerrorMessage (db->conn));
  char *nl = strchr (m, '\n');
  if (nl)
    *nl = '\0';
  return g_steal_pointer (&m);
}

/* *err = "what: <server's message>" with the code its SQLSTATE maps to.
 * Inside a transaction the first failure is remembered (aborted_code). */
static void
set_result_error (GError **err, PgDb *db, const PGresult *res,
                  const char *what)
{
  const char *state = res ? PQresultErrorField (res, PG_DIAG_SQLSTATE)
                          : NULL;
  const char *primary = res ? PQresultErrorField (res,
                                                  PG_DIAG_MESSAGE_PRIMARY)
                            : NULL;
  g_autofree char *msg = primary ? g_strdup (primary) : conn_message (db);
  int code = error_code (state);
  if (state && strcmp (state, "25P02") == 0 && db->aborted_code >= 0)
    code = db->aborted_code;
  else if (db->base.depth > 0 && db->aborted_code < 0)
    db->aborted_code = code;
  if (db->base.depth > 0 && code == DF_ERROR_BUSY)
    db->busy = true;
  g_set_error (err, DF_ERROR, code, "%s: %s", what, msg);
}

/* ---- the dialect rewrite (db.h) ---------------------------------------- */

static bool
is_word_char (char c)
{
  return g_ascii_isalnum (c) || c == '_';
}

/* p at a word: its length. */
static gsize
word_len (const char *p)
{
  gsize n = 0;
  while (is_word_char (p[n]))
    n++;
  return n;
}

static const char *
skip_space (const char *p)
{
  while (g_ascii_isspace (*p))
    p++;
  return p;
}

/* p at word w (case-insensitive) as a whole word: the end, else NULL. */
static const char *
match_word (const char *p, const char *w)
{
  gsize n = strlen (w);
  if (g_ascii_strncasecmp (p, w, n) != 0 || is_word_char (p[n]))
    return NULL;
  return p + n;
}

/* Copy a quoted span ('...' or "...", a doubled quote inside) starting at
 * p; returns the end. */
static const char *
copy_quoted (GString *out, const char *p)
{
  char q = *p;
  g_string_append_c (out, *p++);
  while (*p)
    {
      g_string_append_c (out, *p);
      if (*p++ == q)
        {
          if (*p != q)
            break;
          g_string_append_c (out, *p++);
        }
    }
  return p;
}

/* A $tag$ ... $tag$ body (plpgsql) at p copied as is; NULL when p is not
 * the start of one. */
static const char *
copy_dollar (GString *out, const char *p)
{
  gsize n = 1;
  while (is_word_char (p[n]) && !g_ascii_isdigit (p[1]))
    n++;
  if (p[n] != '$')
    return NULL;
  g_autofree char *tag = g_strndup (p, n + 1);
  const char *end = strstr (p + n + 1, tag);
  end = end ? end + n + 1 : p + strlen (p);
  g_string_append_len (out, p, end - p);
  return end;
}

/* p at '?': appends $N and returns the end; *top is the highest N so far
 * (a bare ? is the next after it, as SQLite numbers them). */
static const char *
rewrite_param (GString *out, const char *p, int *top)
{
  p++;
  int n;
  if (g_ascii_isdigit (*p))
    {
      n = 0;
      while (g_ascii_isdigit (*p))
        n = n * 10 + (*p++ - '0');
    }
  else
    n = *top + 1;
  *top = MAX (*top, n);
  g_string_append_printf (out, "$%d", n);
  return p;
}

/* p after the word LIMIT: -1 becomes ALL, a parameter NULLIF ($N, -1). */
static const char *
rewrite_limit (GString *out, const char *p, int *top)
{
  const char *q = skip_space (p);
  if (q[0] == '-' && q[1] == '1' && !is_word_char (q[2]))
    {
      g_string_append (out, " ALL");
      return q + 2;
    }
  if (*q != '?')
    return p;
  g_string_append (out, " NULLIF (");
  q = rewrite_param (out, q, top);
  g_string_append (out, "::bigint, -1)");
  return q;
}

/* p at a word: the INTEGER and LIMIT rewrites, or the word as is. */
static const char *
rewrite_word (GString *out, const char *p, int *top)
{
  const char *e;
  if ((e = match_word (p, "INTEGER")))
    {
      const char *k = skip_space (e), *k2;
      if ((k2 = match_word (k, "PRIMARY")) && (k2 = match_word (skip_space (k2), "KEY")))
        {
          g_string_append (out, "BIGINT GENERATED BY DEFAULT AS IDENTITY "
                           "PRIMARY KEY");
          return k2;
        }
      g_string_append (out, "BIGINT");
      return e;
    }
  if ((e = match_word (p, "LIMIT")))
    {
      g_string_append (out, "LIMIT");
      return rewrite_limit (out, e, top);
    }
  gsize n = word_len (p);
  g_string_append_len (out, p, n);
  return p + n;
}

/* The dialect of db.h in sql as PostgreSQL's (new string); *nparams the
 * highest parameter number. */
static char *
rewrite (const char *sql, int *nparams)
{
  GString *out = g_string_sized_new (strlen (sql) + 32);
  int top = 0;
  const char *p = sql, *e;
  while (*p)
    {
      if (*p == '\'' || *p == '"')
        p = copy_quoted (out, p);
      else if (p[0] == '-' && p[1] == '-')
        {
          gsize n = strcspn (p, "\n");
          g_string_append_len (out, p, n);
          p += n;
        }
      else if (*p == '$' && (e = copy_dollar (out, p)))
        p = e;
      else if (*p == '?')
        p = rewrite_param (out, p, &top);
      else if (g_ascii_isalpha (*p) || *p == '_')
        p = rewrite_word (out, p, &top);
      else if (g_ascii_isdigit (*p))
        {
          gsize n = word_len (p);
          g_string_append_len (out, p, n);
          p += n;
        }
      else
        g_string_append_c (out, *p++);
    }
  *nparams = top;
  return g_string_free (out, false);
}

static void
pg_sql_free (gpointer p)
{
  PgSql *s = p;
  g_free (s->text);
  g_free (s);
}

/* The rewrite of sql, made once per text (borrowed from db->sql). */
static const PgSql *
rewritten (PgDb *db, const char *sql)
{
  PgSql *s = g_hash_table_lookup (db->sql, sql);
  if (s)
    return s;
  s = g_new0 (PgSql, 1);
  s->text = rewrite (sql, &s->nparams);
  g_snprintf (s->name, sizeof s->name, "df%u",
              g_hash_table_size (db->sql));
  g_hash_table_insert (db->sql, g_strdup (sql), s);
  return s;
}

/* ---- open / close ----------------------------------------------------- */

static bool exec_text (PgDb *db, const char *text, const char *what,
                       GError **err);

/* libpq notices (NOTICE: ... already exists, skipping) are not errors. */
static void
on_notice (void *arg, const char *message)
{
  (void) arg;
  g_autofree char *m = g_strchomp (g_strdup (message));
  g_debug ("farm DB: %s", m);
}

static void
append_param (GString *gs, const char *key, const char *val)
{
  if (gs->len)
    g_string_append_c (gs, ' ');
  g_string_append_printf (gs, "%s=", key);
  if (*val && !strpbrk (val, " '\\"))
    {
      g_string_append (gs, val);
      return;
    }
  g_string_append_c (gs, '\'');
  for (const char *p = val; *p; p++)
    {
      if (*p == '\'' || *p == '\\')
        g_string_append_c (gs, '\\');
      g_string_append_c (gs, *p);
    }
  g_string_append_c (gs, '\'');
}

/* conninfo's parameters as a conninfo that names the DB and leaves out
 * every secret (libpq marks them with dispchar '*'), or NULL when libpq
 * cannot parse it. */
static char *
redacted_name (const char *conninfo)
{
  char *perr = NULL;
  PQconninfoOption *opts = PQconninfoParse (conninfo, &perr);
  PQfreemem (perr);     /* it may quote the text, password included */
  if (!opts)
    return NULL;
  static const char *const shown[] = { "host", "hostaddr", "port", "dbname",
                                       "user", "sslmode" };
  GString *gs = g_string_new (NULL);
  for (gsize k = 0; k < G_N_ELEMENTS (shown); k++)
    for (PQconninfoOption *o = opts; o->keyword; o++)
      if (o->val && strcmp (o->keyword, shown[k]) == 0
          && strchr (o->dispchar, '*') == NULL)
        append_param (gs, o->keyword, o->val);
  PQconninfoFree (opts);
  return g_string_free (gs, false);
}

char *
df_db_pg_redact (const char *conninfo)
{
  char *name = redacted_name (conninfo);
  return name ? name : g_strdup ("(an unparsable PostgreSQL conninfo)");
}

static bool listen_text (PgDb *db, GError **err);

/* What every new session of the connection needs. */
static bool
session_setup (PgDb *db, GError **err)
{
  PQsetNoticeProcessor (db->conn, on_notice, NULL);
  /* Like SQLite's busy wait: a row lock held longer fails DF_ERROR_BUSY
   * (55P03) instead of waiting for ever. */
  if (!exec_text (db, "SET lock_timeout = " G_STRINGIFY (LOCK_TIMEOUT_MS),
                  "farm DB: SET lock_timeout", err))
    return false;
  return db->listening == NULL || listen_text (db, err);
}

/* Outside a transaction, a lost connection is made again (the server
 * restarted, the network came back): its prepared statements are gone
 * with the old session.  False + err "farm DB NAME: cannot connect"
 * while the server is unreachable. */
static bool
ensure_connected (PgDb *db, GError **err)
{
  if (db->base.depth > 0 || PQstatus (db->conn) == CONNECTION_OK)
    return true;
  PQreset (db->conn);
  if (PQstatus (db->conn) != CONNECTION_OK)
    {
      g_autofree char *msg = conn_message (db);
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "farm DB %s: cannot connect: %s", db->name, msg);
      return false;
    }
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init (&it, db->sql);
  while (g_hash_table_iter_next (&it, NULL, &v))
    ((PgSql *) v)->prepared = false;
  g_message ("farm DB %s: connected again", db->name);
  return session_setup (db, err);
}

DfDb *
df_db_pg_open (const char *conninfo, bool create, GError **err)
{
  (void) create;
  g_autofree char *name = redacted_name (conninfo);
  if (!name)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "farm DB: not a valid PostgreSQL URI or conninfo "
                   "(libpq cannot parse it; not shown: it may hold a "
                   "password)");
      return NULL;
    }
  PgDb *db = g_new0 (PgDb, 1);
  db->base.ops = &pg_ops;
  g_autoptr (DfDb) owner = &db->base;
  db->name = g_steal_pointer (&name);
  db->aborted_code = -1;
  db->sql = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                   pg_sql_free);
  /* Defaults the conninfo may override (libpq keeps the last value of a
   * key, and dbname= expands conninfo after them): an unreachable DB host
   * fails a connection in 5 s instead of the TCP timeout, and a vanished
   * one is noticed by TCP keepalives in about 25 s (offline mode). */
  const char *const keys[] = { "connect_timeout", "keepalives_idle",
                               "keepalives_interval", "keepalives_count",
                               "dbname", "fallback_application_name", NULL };
  const char *const vals[] = { "5", "10", "5", "3", conninfo, "diskfarm",
                               NULL };
  db->conn = PQconnectdbParams (keys, vals, 1);
  if (PQstatus (db->conn) != CONNECTION_OK)
    {
      g_autofree char *msg = conn_message (db);
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "farm DB %s: cannot connect: %s", db->name, msg);
      return NULL;
    }
  if (!session_setup (db, err))
    return NULL;
  return g_steal_pointer (&owner);
}

static void
pg_close (DfDb *base)
{
  PgDb *db = PG_DB (base);
  if (db->conn)
    {
      if (PQtransactionStatus (db->conn) != PQTRANS_IDLE)
        PQclear (PQexec (db->conn, "ROLLBACK"));
      PQfinish (db->conn);
    }
  g_hash_table_destroy (db->sql);
  g_free (db->name);
  g_free (db->listening);
  g_free (db);
}

static const char *
pg_name (DfDb *base)
{
  return PG_DB (base)->name;
}

/* Run text (already PostgreSQL's) without parameters. */
static bool
exec_text (PgDb *db, const char *text, const char *what, GError **err)
{
  PGresult *res = PQexec (db->conn, text);
  ExecStatusType s = PQresultStatus (res);
  bool ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
  if (!ok)
    set_result_error (err, db, res, what);
  PQclear (res);
  return ok;
}

static bool
pg_exec (DfDb *base, const char *sql, const char *what, GError **err)
{
  PgDb *db = PG_DB (base);
  int n = 0;
  g_autofree char *text = rewrite (sql, &n);
  g_return_val_if_fail (n == 0, false);
  return ensure_connected (db, err) && exec_text (db, text, what, err);
}

/* ---- statements ------------------------------------------------------- */

static DfDbStmt *
pg_prepare (DfDb *base, const char *sql, GError **err)
{
  PgDb *db = PG_DB (base);
  PgSql *text = (PgSql *) rewritten (db, sql);
  if (!ensure_connected (db, err))
    return NULL;
  if (!text->prepared)
    {
      PGresult *res = PQprepare (db->conn, text->name, text->text,
                                 text->nparams, NULL);
      text->prepared = PQresultStatus (res) == PGRES_COMMAND_OK;
      if (!text->prepared)
        set_result_error (err, db, res, "farm.db: prepare");
      PQclear (res);
      if (!text->prepared)
        return NULL;
    }
  PgStmt *st = g_new0 (PgStmt, 1);
  st->base.db = base;
  st->db = db;
  st->sql = text;
  st->values = g_new0 (char *, st->sql->nparams + 1);
  return &st->base;
}

static void
pg_release (DfDbStmt *base)
{
  PgStmt *st = PG_ST (base);
  for (int i = 0; i < st->sql->nparams; i++)
    g_free (st->values[i]);
  g_free (st->values);
  PQclear (st->res);
  g_free (st);
}

static void
bind_owned (PgStmt *st, int i, char *s)
{
  g_return_if_fail (i >= 1 && i <= st->sql->nparams);
  g_free (st->values[i - 1]);
  st->values[i - 1] = s;
}

static void
pg_bind_text (DfDbStmt *st, int i, const char *s)
{
  bind_owned (PG_ST (st), i, g_strdup (s));
}

static void
pg_bind_int64 (DfDbStmt *st, int i, gint64 v)
{
  bind_owned (PG_ST (st), i, g_strdup_printf ("%" G_GINT64_FORMAT, v));
}

/* The first step runs the statement and keeps its rows. */
static bool
run (PgStmt *st, GError **err)
{
  PgDb *db = st->db;
  st->res = PQexecPrepared (db->conn, st->sql->name, st->sql->nparams,
                            (const char *const *) st->values, NULL, NULL, 0);
  ExecStatusType s = PQresultStatus (st->res);
  if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
    {
      set_result_error (err, db, st->res, "farm.db");
      return false;
    }
  const char *tuples = PQcmdTuples (st->res);
  if (*tuples && !g_str_has_prefix (PQcmdStatus (st->res), "SELECT"))
    db->changes = g_ascii_strtoll (tuples, NULL, 10);
  st->row = -1;
  return true;
}

static int
pg_step (DfDbStmt *base, GError **err)
{
  PgStmt *st = PG_ST (base);
  if (!st->res && !run (st, err))
    return -1;
  if (PQresultStatus (st->res) != PGRES_TUPLES_OK)
    return 0;
  if (st->row < PQntuples (st->res))
    st->row++;
  return st->row < PQntuples (st->res) ? 1 : 0;
}

static gint64
pg_changes (DfDb *db)
{
  return PG_DB (db)->changes;
}

static bool
pg_col_is_null (DfDbStmt *base, int i)
{
  PgStmt *st = PG_ST (base);
  return PQgetisnull (st->res, st->row, i);
}

static const char *
pg_col_text (DfDbStmt *base, int i)
{
  PgStmt *st = PG_ST (base);
  if (!st->res || st->row < 0 || st->row >= PQntuples (st->res)
      || i >= PQnfields (st->res) || PQgetisnull (st->res, st->row, i))
    return NULL;
  return PQgetvalue (st->res, st->row, i);
}

/* Integers come as text; a boolean (EXISTS, a comparison) as t or f. */
static gint64
pg_col_int64 (DfDbStmt *st, int i)
{
  const char *v = pg_col_text (st, i);
  if (!v)
    return 0;
  if (strcmp (v, "t") == 0)
    return 1;
  if (strcmp (v, "f") == 0)
    return 0;
  return g_ascii_strtoll (v, NULL, 10);
}

static int
pg_col_count (DfDbStmt *base)
{
  PgStmt *st = PG_ST (base);
  return st->res ? PQnfields (st->res) : 0;
}

static const char *
pg_col_name (DfDbStmt *base, int i)
{
  return PQfname (PG_ST (base)->res, i);
}

/* ---- transactions ----------------------------------------------------- */

static bool
pg_begin (DfDb *base, GError **err)
{
  PgDb *db = PG_DB (base);
  if (!ensure_connected (db, err))
    return false;
  if (base->depth == 0 && PQtransactionStatus (db->conn) != PQTRANS_IDLE)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_BUSY,
                   "farm.db: a transaction is already open");
      return false;
    }
  g_autofree char *sql = base->depth == 0
    ? g_strdup ("BEGIN ISOLATION LEVEL SERIALIZABLE")
    : g_strdup_printf ("SAVEPOINT df_sp%u", base->depth);
  g_autofree char *what = g_strdup_printf ("farm.db: %s", sql);
  if (!exec_text (db, sql, what, err))
    return false;
  if (base->depth == 0)
    {
      db->aborted_code = -1;
      db->busy = false;
    }
  base->depth++;
  return true;
}

static void pg_rollback (DfDb *base);

static bool
pg_commit (DfDb *base, GError **err)
{
  PgDb *db = PG_DB (base);
  guint level = base->depth - 1;
  g_autofree char *sql = level == 0
    ? g_strdup ("COMMIT")
    : g_strdup_printf ("RELEASE SAVEPOINT df_sp%u", level);
  g_autofree char *what = g_strdup_printf ("farm.db: %s", sql);
  PGresult *res = PQexec (db->conn, sql);
  bool ok = PQresultStatus (res) == PGRES_COMMAND_OK;
  if (!ok)
    set_result_error (err, db, res, what);
  else if (level == 0 && strcmp (PQcmdStatus (res), "ROLLBACK") == 0)
    {
      /* COMMIT of an aborted transaction rolls it back, quietly. */
      if (db->aborted_code == DF_ERROR_BUSY)
        db->busy = true;
      g_set_error (err, DF_ERROR,
                   db->aborted_code >= 0 ? db->aborted_code : DF_ERROR_IO,
                   "%s: the transaction had failed and was rolled back",
                   what);
      ok = false;
    }
  PQclear (res);
  if (!ok)
    {
      if (PQtransactionStatus (db->conn) != PQTRANS_IDLE || level > 0)
        pg_rollback (base);
      else
        base->depth = level;
      return false;
    }
  base->depth = level;
  return true;
}

static void
pg_rollback (DfDb *base)
{
  PgDb *db = PG_DB (base);
  guint level = base->depth - 1;
  g_autofree char *sql = level == 0
    ? g_strdup ("ROLLBACK")
    : g_strdup_printf ("ROLLBACK TO SAVEPOINT df_sp%u; "
                       "RELEASE SAVEPOINT df_sp%u", level, level);
  PGresult *res = PQexec (db->conn, sql);
  if (PQresultStatus (res) != PGRES_COMMAND_OK && level == 0
      && PQtransactionStatus (db->conn) != PQTRANS_IDLE)
    g_warning ("farm.db: rollback failed: %s",
               PQresultErrorMessage (res));
  PQclear (res);
  /* Back at the savepoint the transaction works again. */
  db->aborted_code = -1;
  base->depth = level;
}

/* ---- schema bookkeeping ----------------------------------------------- */

/* diskfarm_schema holds app_id and version; a DB without it and without
 * tables is ours to create, one with tables is someone else's. */
static bool
pg_schema_get (DfDb *db, guint32 app_id, int *version, GError **err)
{
  gint64 has = 0, id = 0, v = 0, tables = 0;
  if (!df_db_read_int64 (db, "SELECT to_regclass ('diskfarm_schema') "
                              "IS NOT NULL", &has, err))
    return false;
  if (!has)
    {
      if (!df_db_read_int64 (db, "SELECT count(*) FROM pg_class c JOIN "
                             "pg_namespace n ON n.oid = c.relnamespace WHERE "
                             "n.nspname = current_schema () AND c.relkind IN "
                             "('r', 'v', 'm', 'p', 'f')", &tables, err))
        return false;
      if (tables == 0)
        {
          *version = 0;
          return true;
        }
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "%s is a PostgreSQL database but not a diskfarm farm DB "
                   "(%" G_GINT64_FORMAT " tables, no diskfarm_schema)",
                   PG_DB (db)->name, tables);
      return false;
    }
  if (!df_db_read_int64 (db, "SELECT app_id FROM diskfarm_schema", &id,
                         err)
      || !df_db_read_int64 (db, "SELECT version FROM diskfarm_schema", &v,
                            err))
    return false;
  if (id != (gint64) app_id)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "%s is not a diskfarm farm DB (application id 0x%08"
                   G_GINT64_MODIFIER "x)", PG_DB (db)->name, id);
      return false;
    }
  *version = (int) v;
  return true;
}

static bool
pg_schema_set (DfDb *base, guint32 app_id, int version, GError **err)
{
  g_autofree char *sql = g_strdup_printf (
    "CREATE TABLE IF NOT EXISTS diskfarm_schema (\n"
    "  app_id  BIGINT NOT NULL,\n"
    "  version INTEGER NOT NULL);\n"
    "DELETE FROM diskfarm_schema;\n"
    "INSERT INTO diskfarm_schema (app_id, version) VALUES (%u, %d)",
    (unsigned) app_id, version);
  return exec_text (PG_DB (base), sql, "farm.db: record schema version",
                    err);
}

/* A session-level advisory lock, taken before the migration's
 * transactions begin (a serializable transaction's snapshot would predate
 * a lock taken inside it). */
static bool
pg_schema_lock (DfDb *base, guint32 app_id, bool lock, GError **err)
{
  g_autofree char *sql = g_strdup_printf (
    "SELECT pg_advisory_%slock (%u)", lock ? "" : "un", (unsigned) app_id);
  return exec_text (PG_DB (base), sql, "farm.db: lock the schema", err);
}

static bool
pg_failed_busy (DfDb *base)
{
  return PG_DB (base)->busy;
}

/* ---- change notifications -------------------------------------------- */

static bool
pg_notify (DfDb *base, const char *channel, const char *payload,
           GError **err)
{
  PgDb *db = PG_DB (base);
  const char *const values[] = { channel, payload };
  PGresult *res = PQexecParams (db->conn, "SELECT pg_notify ($1, $2)", 2,
                                NULL, values, NULL, NULL, 0);
  bool ok = PQresultStatus (res) == PGRES_TUPLES_OK;
  if (!ok)
    set_result_error (err, db, res, "farm DB: NOTIFY");
  PQclear (res);
  return ok;
}

/* LISTEN on db->listening (an identifier: quoted by libpq). */
static bool
listen_text (PgDb *db, GError **err)
{
  char *id = PQescapeIdentifier (db->conn, db->listening,
                                 strlen (db->listening));
  if (id == NULL)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_IO, "farm DB %s: LISTEN: %s",
                   db->name, PQerrorMessage (db->conn));
      return false;
    }
  g_autofree char *sql = g_strdup_printf ("LISTEN %s", id);
  PQfreemem (id);
  return exec_text (db, sql, "farm DB: LISTEN", err);
}

static bool
pg_listen (DfDb *base, const char *channel, GError **err)
{
  PgDb *db = PG_DB (base);
  g_return_val_if_fail (base->depth == 0, false);
  g_free (db->listening);
  db->listening = g_strdup (channel);
  return ensure_connected (db, err) && listen_text (db, err);
}

static int
pg_notify_fd (DfDb *base)
{
  PgDb *db = PG_DB (base);
  return PQstatus (db->conn) == CONNECTION_OK ? PQsocket (db->conn) : -1;
}

static int
pg_notices (DfDb *base, GError **err)
{
  PgDb *db = PG_DB (base);
  int n = 0;
  if (PQstatus (db->conn) != CONNECTION_OK || !PQconsumeInput (db->conn)
      || PQstatus (db->conn) != CONNECTION_OK)
    {
      g_autofree char *msg = conn_message (db);
      g_set_error (err, DF_ERROR, DF_ERROR_IO,
                   "farm DB %s: connection lost: %s", db->name, msg);
      return -1;
    }
  for (PGnotify *n1; (n1 = PQnotifies (db->conn)) != NULL; n++)
    PQfreemem (n1);
  return n;
}

static const DfDbOps pg_ops = {
  .dialect = DF_DB_POSTGRESQL,
  .close = pg_close,
  .name = pg_name,
  .exec = pg_exec,
  .prepare = pg_prepare,
  .release = pg_release,
  .bind_text = pg_bind_text,
  .bind_int64 = pg_bind_int64,
  .step = pg_step,
  .changes = pg_changes,
  .col_is_null = pg_col_is_null,
  .col_int64 = pg_col_int64,
  .col_text = pg_col_text,
  .col_count = pg_col_count,
  .col_name = pg_col_name,
  .begin = pg_begin,
  .commit = pg_commit,
  .rollback = pg_rollback,
  .schema_get = pg_schema_get,
  .schema_set = pg_schema_set,
  .schema_lock = pg_schema_lock,
  .failed_busy = pg_failed_busy,
  .notify = pg_notify,
  .listen = pg_listen,
  .notify_fd = pg_notify_fd,
  .notices = pg_notices,
};
