/* diskfarm console: declarations shared by the `diskfarm` command files.
 *
 * main.c parses the global options and dispatches to one leaf command
 * (DfCmd).  A leaf parses its own options with df_cmd_parse, does its work
 * against the farm and prints through the helpers of output.c, so every
 * command formats tables and JSON the same way.  A leaf returns false with
 * a GError; main prints it as one line "diskfarm: <message>" and exits 1.
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h"
#include "conf.h"
#include "privilege.h"
#include "farm.h"
#include "store.h"
#include "vdisk.h"
#include "lifecycle.h"

/* ---- global options and command dispatch (main.c) --------------------- */

/* Options given before (or after) the command.  Owned by main. */
typedef struct {
  char *farm_opt;     /* --farm, or NULL: then $DISKFARM_FARM or the conf */
  char *config_opt;   /* --config, or NULL: $DISKFARM_CONFIG or default */
  char *db_opt;       /* --db, or NULL: $DISKFARM_DB or the conf */
  DfConf *conf;       /* diskfarm.conf, loaded by df_cmd_parse; owned */
  char *admin_opt;    /* --admin, or NULL: then $DISKFARM_ADMIN or the conf */
  gboolean json;      /* --json */
  gboolean verbose;   /* --verbose */
} DfCtx;

/* Errors in the command line itself: main adds the hint
 * "see 'diskfarm <command> --help'" to their message. */
#define DF_USAGE_ERROR (df_usage_error_quark ())
GQuark df_usage_error_quark (void);

/* A leaf command.  argv[0] is the leaf's name; options are not yet parsed. */
typedef bool (*DfCmdFunc) (DfCtx *ctx, int argc, char **argv, GError **err);

typedef struct {
  const char *name;      /* "import" */
  const char *summary;   /* one line for the group's --help */
  DfCmdFunc func;
} DfCmd;

/* Leaf commands of each group, terminated by { NULL }. */
extern const DfCmd df_vdisk_cmds[];
extern const DfCmd df_device_cmds[];
extern const DfCmd df_collection_cmds[];

/* What a leaf's --help says about it. */
typedef struct {
  const char *path;      /* "vdisk import" */
  const char *args;      /* positional arguments, "NAME FILE" */
  guint min_args;        /* positional arguments required */
  guint max_args;        /* positional arguments accepted */
  const char *summary;   /* what the command does (a paragraph) */
  const char *examples;  /* example command lines, one per line */
} DfCmdSpec;

/* Parse a leaf's options (entries, plus --json, --farm, --config,
 * --verbose), check the positional count and load diskfarm.conf into
 * ctx->conf (errors there are DF_ERROR, with file and line).  On success argc and argv hold the program name
 * followed by the positional arguments only.  --help prints and exits 0.
 * Errors are DF_USAGE_ERROR. */
bool df_cmd_parse (DfCtx *ctx, const DfCmdSpec *spec,
                   const GOptionEntry *entries, int *argc, char ***argv,
                   GError **err);

/* df_cmd_parse, then df_ctx_open_farm (ctx, false): the start of most
 * leaves.  New farm handle (caller closes), or NULL + err from whichever
 * step failed (the farm is not opened when parsing fails). */
DfFarm *df_cmd_open_farm (DfCtx *ctx, const DfCmdSpec *spec,
                          const GOptionEntry *entries, int *argc,
                          char ***argv, GError **err);

/* The FILE of an export (vdisk export, device export): false + a
 * DF_ERROR_EXISTS error when anything is there, an export never
 * overwrites. */
bool df_cmd_export_target (const char *file, GError **err);

/* Make a DF_USAGE_ERROR ("missing --mac", "nothing to change"). */
void df_usage_error (GError **err, const char *fmt, ...) G_GNUC_PRINTF (2, 3);

/* A time given on the command line (option opt, for messages): ISO 8601
 * with a zone ("2026-12-01T02:00:00Z", "...+01:00"), local time
 * "YYYY-MM-DD HH:MM[:SS]" or "YYYY-MM-DDTHH:MM[:SS]", a local date
 * "YYYY-MM-DD" (midnight), or "-N" + s|m|h|d: that long ago.  New string
 * "YYYY-MM-DDTHH:MM:SSZ" (UTC, as the farm DB stores times), or NULL and a
 * usage error. */
char *df_parse_when (const char *opt, const char *s, GError **err);

/* The farm directory in force (borrowed from ctx or the environment). */
const char *df_ctx_farm_dir (const DfCtx *ctx);
/* Open the farm (create: `init` only).  New handle, or NULL + err. */
DfFarm *df_ctx_open_farm (const DfCtx *ctx, bool create, GError **err);
/* The admin address asked besides the farm's server table (borrowed):
 * --admin, else $DISKFARM_ADMIN, else diskfarm.conf [console] admin;
 * NULL when none says (then the farm's admin socket is asked). */
const char *df_ctx_admin (const DfCtx *ctx);
/* This host's stream server in the registry (borrowed): opt (--server),
 * else diskfarm.conf [streamsvc] server-name, else NULL (cmd_store.c). */
const char *df_ctx_server_name (const DfCtx *ctx, const char *opt);

/* ---- records, tables and JSON (output.c) ------------------------------ */

/* A record is an ordered list of typed fields.  Printed as one table row,
 * as "label: value" lines (show) or as one JSON object.  key is the JSON
 * member name; label the column header / show label (lower case; NULL:
 * the field is in JSON and show output but not in tables).  Sizes are
 * bytes in JSON and humanised (df_format_size) for people. */
typedef struct DfRecord DfRecord;
DfRecord *df_record_new (void);
void df_record_free (DfRecord *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfRecord, df_record_free)

void df_record_str (DfRecord *r, const char *key, const char *label,
                    const char *value);           /* NULL -> null / "-" */
void df_record_int (DfRecord *r, const char *key, const char *label,
                    gint64 value);
/* An integer that may be absent (null / "-"). */
void df_record_opt_int (DfRecord *r, const char *key, const char *label,
                        bool present, gint64 value);
void df_record_size (DfRecord *r, const char *key, const char *label,
                     uint64_t bytes);
/* A size where 0 means "no limit" ("none" for people, 0 in JSON). */
void df_record_limit (DfRecord *r, const char *key, const char *label,
                      uint64_t bytes);
void df_record_bool (DfRecord *r, const char *key, const char *label,
                     bool value);
/* A list of strings: a JSON array (empty: []), comma-joined for people
 * ("-" when empty).  values is copied; NULL is the empty list. */
void df_record_strv (DfRecord *r, const char *key, const char *label,
                     const char *const *values);
/* A JSON object given as text (the farm's audit detail): the object in
 * JSON output, or {"text": json_text} when the text is not one; null when
 * json_text is NULL or empty.  The text as given for people. */
void df_record_object (DfRecord *r, const char *key, const char *label,
                       const char *json_text);
/* The rows an export prints about the FILE it wrote: file, format,
 * virtual_size and its file size now. */
void df_record_export (DfRecord *r, const char *file, DfImageFormat fmt,
                       uint64_t virtual_size);

/* New empty array of DfRecord (frees its records). */
GPtrArray *df_record_list_new (void);

/* A list command's output: a JSON array of objects, or an aligned table
 * (empty_msg when there is no record).  Takes nothing. */
void df_print_list (GPtrArray *records, bool json, const char *empty_msg);

/* A show command's output: the main record as "label: value" lines then
 * each attached list as a titled, indented table; in JSON one object with
 * the lists as array members. */
typedef struct DfReport DfReport;
DfReport *df_report_new (DfRecord *main);        /* takes main */
/* Attach a list (takes records). */
void df_report_add_list (DfReport *rep, const char *key, const char *title,
                         GPtrArray *records);
void df_report_print (const DfReport *rep, bool json);
void df_report_free (DfReport *rep);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfReport, df_report_free)

/* The result of a change (add, import, reset): the record as a JSON object,
 * or for people the message line built from fmt. */
void df_print_result (const DfRecord *r, bool json, const char *fmt, ...)
  G_GNUC_PRINTF (3, 4);

/* Progress bar on stderr with percentage, MiB/s and ETA (m:ss), drawn
 * only when stderr is a terminal; import, export, seal and merge all use
 * it.  Use df_progress_update as a df_progress_cb with the DfProgress as
 * opaque; df_progress_end clears the line. */
typedef struct {
  bool enabled;
  const char *what;      /* "importing", "exporting" (borrowed) */
  gint64 start_us;
  gint64 last_draw_us;
  bool drawn;
} DfProgress;
void df_progress_init (DfProgress *p, const char *what);
void df_progress_update (void *opaque, uint64_t done, uint64_t total);
void df_progress_end (DfProgress *p);
/* A DfLifecycleProgress (lib/lifecycle) drawing into p. */
DfLifecycleProgress df_cli_progress (DfProgress *p);

/* ---- live sessions (cmd_session.c) ------------------------------------ */

#include "live.h"

/* The farm's live sessions (df_live_collect with df_ctx_admin).  The
 * default admin address, asked only because none was given, is dropped
 * from the unreachable list.  New DfLive, or NULL + err. */
DfLive *df_ctx_live_quiet (const DfCtx *ctx, DfFarm *farm, GError **err);
/* One warning line on stderr per server unreachable or ignored (another
 * farm's). */
void df_ctx_live_warn (const DfLive *live);
/* df_ctx_live_quiet then df_ctx_live_warn. */
DfLive *df_ctx_live (const DfCtx *ctx, DfFarm *farm, GError **err);
/* The rule before a change to device d that its live sessions would not
 * survive: refuse it while d is live (df_live_refuse) unless force; warn
 * and go on when no server could be asked (the fence is the backstop);
 * with force, warn which sessions get fenced.  what as df_live_refuse's. */
bool df_ctx_check_not_live (const DfLive *live, const DfDevice *d,
                            bool force, const char *what, GError **err);
/* Ask the servers, then run change (a farm mutator, given data) in a
 * transaction and keep it only when df_ctx_check_not_live allows for d
 * (the device as it is before the change): bad input is refused by the
 * farm first, with no warning about servers; a refused change is rolled
 * back. */
typedef bool (*DfChangeFn) (DfFarm *farm, gpointer data, GError **err);
bool df_ctx_change_unless_live (const DfCtx *ctx, DfFarm *farm,
                                const DfDevice *d, bool force,
                                DfChangeFn change, gpointer data,
                                GError **err);
/* One session as `session list` and `device show` print it.  New record. */
DfRecord *df_live_session_record (const DfLiveSession *s);


/* ---- inspection through libguestfs (inspect.c) ------------------------ */

/* "NAME" or "NAME@N" -> the version (newest production when no @N); a
 * version not sealed yet is refused.  New DfVersion, or NULL + err. */
DfVersion *df_inspect_resolve_ref (DfFarm *farm, const char *ref,
                                   GError **err);
/* Print the OS, hostname and filesystems of v (`vdisk inspect`). */
bool df_inspect_run (DfCtx *ctx, DfFarm *farm, const DfVersion *v,
                     GError **err);
/* Print the regular files added, removed, changed from va to vb
 * (`version diff`). */
bool df_inspect_diff (DfCtx *ctx, DfFarm *farm, const DfVersion *va,
                      const DfVersion *vb, GError **err);

/* ---- records shared by several commands ------------------------------- */

/* A device as listed by `device list` and `collection show`
 * (cmd_device.c).  New record. */
DfRecord *df_device_record (const DfDevice *d);
