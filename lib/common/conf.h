/* diskfarm: the one configuration file, diskfarm.conf (GKeyFile).
 *
 * Every program (diskfarm, streamsvc, bootstrapsvc, bdm) reads the same
 * file; each takes its own groups.  Every group and key any program
 * understands is one row of df_conf_schema (conf.c): its type, its
 * built-in default and its help.  Loading checks the whole file against
 * that table, so a mistyped key is refused by whichever program reads it
 * first, with the file and line: "diskfarm.conf:7: unknown key
 * 'nbd_listen' in group [streamsvc]".
 *
 * Precedence, highest first: command-line options, the file, the
 * built-in default of the schema.  Keys are spelled like the long option
 * they stand for ("nbd-listen" for --nbd-listen); lists are separated by
 * ';'; booleans are true or false. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* Defaults that --help texts quote as well as the schema. */
#include "defaults.h" /* DF_NBD_DEFAULT_LISTEN, DF_RUNTIME_DIR */
/* streamsvc's iSCSI dead-peer pings (seconds; iscsi_conn_set_nop); the TCP
 * keepalive default is DF_TCP_KEEPALIVE_DEFAULT (common.h). */
#define DF_ISCSI_NOP_INTERVAL_DEFAULT 10
#define DF_ISCSI_NOP_TIMEOUT_DEFAULT 15
#define DF_ISCSI_NOP_MAX 3600
/* streamsvc's connection limits (server.h DfStreamLimits): seconds for the
 * NBD negotiation / iSCSI login (qemu-nbd's 10 s since CVE-2024-7409),
 * seconds a started request may take to arrive whole, connections per
 * client address (qemu-nbd's 100); 0 = no limit. */
#define DF_HANDSHAKE_TIMEOUT_DEFAULT 10
#define DF_REQUEST_TIMEOUT_DEFAULT 60
#define DF_TIMEOUT_MAX 3600
#define DF_MAX_CONN_PER_SOURCE_DEFAULT 100
#define DF_MAX_CONN_PER_SOURCE_MAX 65536

typedef enum {
  DF_CONF_STRING,       /* any non-empty text */
  DF_CONF_PATH,         /* a file or directory name, non-empty */
  DF_CONF_INT,          /* decimal integer in [min, max] */
  DF_CONF_BOOL,         /* true | false */
  DF_CONF_IPV4,         /* dotted-quad IPv4 address */
  DF_CONF_LISTEN,       /* HOST:PORT, [v6]:PORT, :PORT, unix:PATH or none */
  DF_CONF_LISTEN_LIST,  /* ';'-separated df_parse_listen addresses */
  DF_CONF_STRING_LIST,  /* ';'-separated non-empty texts */
} DfConfType;

typedef struct {
  const char *group;    /* "streamsvc" */
  const char *key;      /* "nbd-listen" */
  DfConfType type;
  const char *def;      /* built-in default as file text; NULL: none */
  const char *help;     /* one line for docs and `diskfarm config show` */
  gint64 min, max;      /* DF_CONF_INT only */
  const char *alias_of; /* "group.key": an old spelling of that key */
} DfConfKey;

/* The schema, terminated by a row whose group is NULL. */
extern const DfConfKey df_conf_schema[];

/* Schema row for "group.key" (or group, key), or NULL. */
const DfConfKey *df_conf_key_find (const char *group, const char *key);

typedef struct DfConf DfConf;

/* The file in force: path when given (--config), else $DISKFARM_CONFIG
 * when set and non-empty, else the built-in default.  Borrowed or static
 * string; *explicit_out tells whether it was asked for (then it must
 * exist). */
const char *df_conf_choose_path (const char *path, bool *explicit_out);

/* Load and check the file df_conf_choose_path picks.  A missing default
 * file gives an empty configuration (every key at its default); a missing
 * explicit one, a syntax error, an unknown group or key, a key given twice
 * or a bad value is an error naming the file and line.  New DfConf
 * (df_conf_free), or NULL + err (DF_ERROR_INVALID, DF_ERROR_NOT_FOUND). */
DfConf *df_conf_load (const char *path, GError **err);

/* The same from text; name is used in messages (tests, fuzzing). */
DfConf *df_conf_load_data (const char *data, const char *name, GError **err);

void df_conf_free (DfConf *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfConf, df_conf_free)

/* The file read, or NULL when the default file was absent.  Borrowed. */
const char *df_conf_file (const DfConf *c);

/* Whether the file sets group.key (or an alias of it). */
bool df_conf_is_set (const DfConf *c, const char *group, const char *key);
/* The line of the file that sets group.key, or 0. */
int df_conf_line (const DfConf *c, const char *group, const char *key);

/* Typed values: the file's value, else the schema default.  group.key
 * must be a schema row of that type (asserted).  Strings are borrowed
 * from c, or NULL when neither the file nor the schema gives one. */
const char *df_conf_string (const DfConf *c, const char *group,
                            const char *key);
/* NULL-terminated list borrowed from c; NULL when unset without default. */
char *const *df_conf_list (const DfConf *c, const char *group,
                           const char *key);
gint64 df_conf_int (const DfConf *c, const char *group, const char *key);
bool df_conf_bool (const DfConf *c, const char *group, const char *key);

/* The value of "group.key" as file text (lists joined by ';'), for
 * `diskfarm config get`.  New string, or NULL + err for an unknown key;
 * NULL and no error when the key has no value. */
char *df_conf_get_text (const DfConf *c, const char *dotted, GError **err);

/* Prefix err with "FILE:LINE: " of the line that set group.key, for a
 * value a program checks itself (bdm's servers).  Nothing when the value
 * came from the default. */
void df_conf_prefix_error (const DfConf *c, const char *group,
                           const char *key, GError **err);
