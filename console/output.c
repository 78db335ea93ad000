/* diskfarm console: records printed as aligned tables, "label: value"
 * blocks or JSON (json-glib, pretty, stable keys, sizes in bytes), and the
 * terminal progress bar.  All printing of command results goes through here. */
#include "console.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

typedef enum {
  FIELD_STR, FIELD_INT, FIELD_SIZE, FIELD_LIMIT, FIELD_BOOL, FIELD_NULL,
  FIELD_STRV, FIELD_OBJECT,
} FieldType;

typedef struct {
  const char *key;    /* static strings from the commands */
  const char *label;  /* NULL: not in tables */
  FieldType type;
  char *str;          /* FIELD_STR, FIELD_OBJECT's text; owned; NULL = null */
  gint64 num;
  char **strv;        /* FIELD_STRV, owned, never NULL */
  JsonNode *node;     /* FIELD_OBJECT: a JSON object, owned */
} Field;

struct DfRecord {
  GArray *fields;     /* Field */
};

static void
field_clear (gpointer p)
{
  Field *f = p;
  g_free (f->str);
  g_strfreev (f->strv);
  if (f->node != NULL)
    json_node_unref (f->node);
}

DfRecord *
df_record_new (void)
{
  DfRecord *r = g_new0 (DfRecord, 1);
  r->fields = g_array_new (FALSE, TRUE, sizeof (Field));
  g_array_set_clear_func (r->fields, field_clear);
  return r;
}

void
df_record_free (DfRecord *r)
{
  if (r == NULL)
    return;
  g_array_unref (r->fields);
  g_free (r);
}

GPtrArray *
df_record_list_new (void)
{
  return g_ptr_array_new_with_free_func ((GDestroyNotify) df_record_free);
}

static void
record_add (DfRecord *r, const char *key, const char *label, FieldType type,
            const char *str, gint64 num)
{
  Field f = { key, label, type, g_strdup (str), num, NULL, NULL };
  g_array_append_val (r->fields, f);
}

void
df_record_strv (DfRecord *r, const char *key, const char *label,
                const char *const *values)
{
  Field f = { key, label, FIELD_STRV, NULL, 0, NULL, NULL };
  f.strv = values != NULL ? g_strdupv ((char **) values) : g_new0 (char *, 1);
  g_array_append_val (r->fields, f);
}

void
df_record_export (DfRecord *r, const char *file, DfImageFormat fmt,
                  uint64_t virtual_size)
{
  GStatBuf st;
  uint64_t file_size = g_stat (file, &st) == 0 ? (uint64_t) st.st_size : 0;

  df_record_str (r, "file", "file", file);
  df_record_str (r, "format", "format", df_image_format_name (fmt));
  df_record_size (r, "virtual_size", "virtual size", virtual_size);
  df_record_size (r, "file_size", "file size", file_size);
}

/* text as a JSON object: itself when it is one, else {"text": text}. */
static JsonNode *
object_node (const char *text)
{
  g_autoptr (JsonParser) p = json_parser_new ();
  if (json_parser_load_from_data (p, text, -1, NULL)
      && JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
    return json_node_copy (json_parser_get_root (p));
  g_autoptr (JsonObject) o = json_object_new ();
  json_object_set_string_member (o, "text", text);
  JsonNode *n = json_node_new (JSON_NODE_OBJECT);
  json_node_set_object (n, o);
  return n;
}

void
df_record_object (DfRecord *r, const char *key, const char *label,
                  const char *json_text)
{
  if (json_text == NULL || *json_text == '\0')
    {
      record_add (r, key, label, FIELD_NULL, NULL, 0);
      return;
    }
  Field f = { key, label, FIELD_OBJECT, g_strdup (json_text), 0, NULL,
              object_node (json_text) };
  g_array_append_val (r->fields, f);
}

void
df_record_str (DfRecord *r, const char *key, const char *label,
               const char *value)
{
  record_add (r, key, label, value ? FIELD_STR : FIELD_NULL, value, 0);
}

void
df_record_int (DfRecord *r, const char *key, const char *label, gint64 value)
{
  record_add (r, key, label, FIELD_INT, NULL, value);
}

void
df_record_opt_int (DfRecord *r, const char *key, const char *label,
                   bool present, gint64 value)
{
  record_add (r, key, label, present ? FIELD_INT : FIELD_NULL, NULL, value);
}

void
df_record_size (DfRecord *r, const char *key, const char *label,
                uint64_t bytes)
{
  record_add (r, key, label, FIELD_SIZE, NULL, (gint64) bytes);
}

void
df_record_limit (DfRecord *r, const char *key, const char *label,
                 uint64_t bytes)
{
  record_add (r, key, label, FIELD_LIMIT, NULL, (gint64) bytes);
}

void
df_record_bool (DfRecord *r, const char *key, const char *label, bool value)
{
  record_add (r, key, label, FIELD_BOOL, NULL, value);
}

/* ---- text ------------------------------------------------------------- */

/* A field as people read it (new string). */
static char *
field_text (const Field *f)
{
  switch (f->type)
    {
    case FIELD_STR:
      return g_strdup (f->str);
    case FIELD_INT:
      return g_strdup_printf ("%" G_GINT64_FORMAT, f->num);
    case FIELD_SIZE:
      return df_format_size ((uint64_t) f->num);
    case FIELD_LIMIT:
      return f->num == 0 ? g_strdup ("none") : df_format_size ((uint64_t) f->num);
    case FIELD_BOOL:
      return g_strdup (f->num ? "yes" : "no");
    case FIELD_STRV:
      return f->strv[0] != NULL ? g_strjoinv (",", f->strv) : g_strdup ("-");
    case FIELD_OBJECT:
      return g_strdup (f->str);     /* as the farm wrote it */
    case FIELD_NULL:
    default:
      return g_strdup ("-");
    }
}

static const Field *
record_field (const DfRecord *r, guint i)
{
  return &g_array_index (r->fields, Field, i);
}

/* Print records as a table whose columns are the labelled fields of the
 * first record (all records of one list have the same fields). */
static void
print_table (GPtrArray *records, const char *indent)
{
  const DfRecord *first = records->pdata[0];
  guint ncols = first->fields->len;
  g_autofree gsize *width = g_new0 (gsize, ncols);
  g_autoptr(GPtrArray) cells = g_ptr_array_new_with_free_func (g_free);

  for (guint c = 0; c < ncols; c++)
    if (record_field (first, c)->label)
      width[c] = g_utf8_strlen (record_field (first, c)->label, -1);
  for (guint i = 0; i < records->len; i++)
    for (guint c = 0; c < ncols; c++)
      {
        const DfRecord *r = records->pdata[i];
        char *t = field_text (record_field (r, c));
        width[c] = MAX (width[c], (gsize) g_utf8_strlen (t, -1));
        g_ptr_array_add (cells, t);
      }

  for (gint row = -1; row < (gint) records->len; row++)
    {
      g_autoptr(GString) line = g_string_new (indent);
      bool first_col = true;
      for (guint c = 0; c < ncols; c++)
        {
          const char *label = record_field (first, c)->label;
          if (label == NULL)
            continue;
          g_autofree char *head = row < 0 ? g_ascii_strup (label, -1) : NULL;
          const char *t = row < 0 ? head : cells->pdata[row * ncols + c];
          if (!first_col)
            g_string_append (line, "  ");
          first_col = false;
          g_string_append (line, t);
          for (gsize w = g_utf8_strlen (t, -1); w < width[c]; w++)
            g_string_append_c (line, ' ');
        }
      while (line->len > 0 && line->str[line->len - 1] == ' ')
        g_string_truncate (line, line->len - 1);
      printf ("%s\n", line->str);
    }
}

/* "label: value" lines, labels aligned. */
static void
print_fields (const DfRecord *r)
{
  gsize w = 0;
  for (guint i = 0; i < r->fields->len; i++)
    {
      const Field *f = record_field (r, i);
      w = MAX (w, strlen (f->label ? f->label : f->key) + 1);
    }
  for (guint i = 0; i < r->fields->len; i++)
    {
      const Field *f = record_field (r, i);
      g_autofree char *label = g_strconcat (f->label ? f->label : f->key, ":",
                                            NULL);
      g_strdelimit (label, "_", ' ');
      g_autofree char *t = field_text (f);
      printf ("%-*s  %s\n", (int) w, label, t);
    }
}

/* ---- JSON ------------------------------------------------------------- */

static void
json_add_record_members (JsonBuilder *b, const DfRecord *r)
{
  for (guint i = 0; i < r->fields->len; i++)
    {
      const Field *f = record_field (r, i);
      json_builder_set_member_name (b, f->key);
      switch (f->type)
        {
        case FIELD_STR:
          json_builder_add_string_value (b, f->str);
          break;
        case FIELD_INT:
        case FIELD_SIZE:
        case FIELD_LIMIT:
          json_builder_add_int_value (b, f->num);
          break;
        case FIELD_BOOL:
          json_builder_add_boolean_value (b, f->num != 0);
          break;
        case FIELD_STRV:
          json_builder_begin_array (b);
          for (char **s = f->strv; *s != NULL; s++)
            json_builder_add_string_value (b, *s);
          json_builder_end_array (b);
          break;
        case FIELD_OBJECT:
          json_builder_add_value (b, json_node_copy (f->node));
          break;
        case FIELD_NULL:
        default:
          json_builder_add_null_value (b);
          break;
        }
    }
}

static void
json_add_list (JsonBuilder *b, GPtrArray *records)
{
  json_builder_begin_array (b);
  for (guint i = 0; i < records->len; i++)
    {
      json_builder_begin_object (b);
      json_add_record_members (b, records->pdata[i]);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
}

/* Print the builder's root, pretty, with a final newline. */
static void
json_print (JsonBuilder *b)
{
  g_autoptr(JsonNode) root = json_builder_get_root (b);
  g_autoptr(JsonGenerator) gen = json_generator_new ();
  json_generator_set_pretty (gen, TRUE);
  json_generator_set_indent (gen, 2);
  json_generator_set_root (gen, root);
  g_autofree char *text = json_generator_to_data (gen, NULL);
  printf ("%s\n", text);
}

/* ---- public printers ------------------------------------------------- */

void
df_print_list (GPtrArray *records, bool json, const char *empty_msg)
{
  if (json)
    {
      g_autoptr(JsonBuilder) b = json_builder_new ();
      json_add_list (b, records);
      json_print (b);
    }
  else if (records->len == 0)
    printf ("%s\n", empty_msg);
  else
    print_table (records, "");
}

typedef struct {
  const char *key;
  const char *title;
  GPtrArray *records;  /* owned */
} ReportList;

struct DfReport {
  DfRecord *main;      /* owned */
  GArray *lists;       /* ReportList */
};

static void
report_list_clear (gpointer p)
{
  ReportList *l = p;
  g_ptr_array_unref (l->records);
}

DfReport *
df_report_new (DfRecord *main)
{
  DfReport *rep = g_new0 (DfReport, 1);
  rep->main = main;
  rep->lists = g_array_new (FALSE, TRUE, sizeof (ReportList));
  g_array_set_clear_func (rep->lists, report_list_clear);
  return rep;
}

void
df_report_add_list (DfReport *rep, const char *key, const char *title,
                    GPtrArray *records)
{
  ReportList l = { key, title, records };
  g_array_append_val (rep->lists, l);
}

void
df_report_free (DfReport *rep)
{
  if (rep == NULL)
    return;
  df_record_free (rep->main);
  g_array_unref (rep->lists);
  g_free (rep);
}

void
df_report_print (const DfReport *rep, bool json)
{
  if (json)
    {
      g_autoptr(JsonBuilder) b = json_builder_new ();
      json_builder_begin_object (b);
      json_add_record_members (b, rep->main);
      for (guint i = 0; i < rep->lists->len; i++)
        {
          const ReportList *l = &g_array_index (rep->lists, ReportList, i);
          json_builder_set_member_name (b, l->key);
          json_add_list (b, l->records);
        }
      json_builder_end_object (b);
      json_print (b);
      return;
    }
  print_fields (rep->main);
  for (guint i = 0; i < rep->lists->len; i++)
    {
      const ReportList *l = &g_array_index (rep->lists, ReportList, i);
      printf ("\n%s:\n", l->title);
      if (l->records->len == 0)
        printf ("  (none)\n");
      else
        print_table (l->records, "  ");
    }
}

void
df_print_result (const DfRecord *r, bool json, const char *fmt, ...)
{
  if (json)
    {
      g_autoptr(JsonBuilder) b = json_builder_new ();
      json_builder_begin_object (b);
      json_add_record_members (b, r);
      json_builder_end_object (b);
      json_print (b);
      return;
    }
  va_list ap;
  va_start (ap, fmt);
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  printf ("%s\n", msg);
}

/* ---- progress bar ----------------------------------------------------- */

#define BAR_WIDTH 30
#define REDRAW_US (100 * 1000)

void
df_progress_init (DfProgress *p, const char *what)
{
  p->enabled = isatty (STDERR_FILENO) == 1;
  p->what = what;
  p->start_us = g_get_monotonic_time ();
  p->last_draw_us = 0;
  p->drawn = false;
}

void
df_progress_update (void *opaque, uint64_t done, uint64_t total)
{
  DfProgress *p = opaque;
  if (!p->enabled || total == 0)
    return;
  gint64 now = g_get_monotonic_time ();
  if (p->drawn && done < total && now - p->last_draw_us < REDRAW_US)
    return;
  p->last_draw_us = now;
  p->drawn = true;

  double frac = done >= total ? 1.0 : (double) done / (double) total;
  double secs = (double) (now - p->start_us) / G_USEC_PER_SEC;
  double mibs = secs > 0 ? (double) done / (1024.0 * 1024.0) / secs : 0.0;
  int eta = frac > 0 ? (int) (secs / frac - secs + 0.5) : 0;
  char bar[BAR_WIDTH + 1];
  int filled = (int) (frac * BAR_WIDTH);
  for (int i = 0; i < BAR_WIDTH; i++)
    bar[i] = i < filled ? '#' : '.';
  bar[BAR_WIDTH] = '\0';
  fprintf (stderr, "\r%s [%s] %3d%%  %.1f MiB/s  ETA %d:%02d\033[K", p->what,
           bar, (int) (frac * 100), mibs, eta / 60, eta % 60);
  fflush (stderr);
}

void
df_progress_end (DfProgress *p)
{
  if (p->enabled && p->drawn)
    {
      fprintf (stderr, "\r\033[K");
      fflush (stderr);
    }
}

static void
progress_begin (void *opaque, const char *what)
{
  df_progress_init (opaque, what);
}

static void
progress_end (void *opaque)
{
  df_progress_end (opaque);
}

DfLifecycleProgress
df_cli_progress (DfProgress *p)
{
  return (DfLifecycleProgress) { progress_begin, df_progress_update,
                                 progress_end, p };
}
