/* diskfarm: boot generations given while the farm DB is unreachable
 * (offline mode, farm.h "offline boot generations").
 *
 * The journal <dir>/run/offline-generations holds one line "DEVICE
 * GENERATION" per device: the highest generation given or learnt on this
 * host since the DB was last reachable.  It is read and rewritten whole
 * under an exclusive flock of <dir>/run/offline-generations.lock (the
 * host's bootstrapsvc and streamsvc share it) and published by
 * df_store_publish, so a crash leaves the old or the new journal, never a
 * torn one. */
#include "farm.h"
#include "farm-private.h"
#include "common.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define JOURNAL "offline-generations"
/* A device cannot boot this many times in one outage: a larger jump is a
 * bad request, not a boot. */
#define GENERATION_JUMP_MAX 1000000

static char *
journal_path (const char *dir, const char *suffix)
{
  g_autofree char *name = g_strconcat (JOURNAL, suffix, NULL);
  return g_build_filename (dir, "run", name, NULL);
}

/* The journal's lock, taken (an fd to close), or -1 + err. */
static int
journal_lock (const char *dir, GError **err)
{
  g_autofree char *path = journal_path (dir, ".lock");
  int fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0 || flock (fd, LOCK_EX) != 0)
    {
      df_set_error_errno (err, errno, "%s", path);
      if (fd >= 0)
        close (fd);
      return -1;
    }
  return fd;
}

/* Parse one journal line into (name, generation); false for a line that
 * is not ours (skipped with a warning: the journal is only advice on top
 * of the snapshot). */
static bool
parse_line (const char *line, char **name, gint64 *gen)
{
  g_auto (GStrv) f = g_strsplit (line, " ", 0);
  char *end = NULL;
  if (g_strv_length (f) != 2 || !df_validate_name ("device", f[0], NULL))
    return false;
  errno = 0;
  *gen = g_ascii_strtoll (f[1], &end, 10);
  if (errno != 0 || end == f[1] || *end != '\0' || *gen < 1)
    return false;
  *name = g_ascii_strdown (f[0], -1);
  return true;
}

/* The journal of dir: a new table device (lower case) -> gint64, empty
 * when there is none, or NULL + err when it cannot be read. */
static GHashTable *
journal_read (const char *dir, GError **err)
{
  g_autofree char *path = journal_path (dir, "");
  g_autofree char *text = NULL;
  g_autoptr (GError) local = NULL;
  GHashTable *t = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                         g_free);
  if (!g_file_get_contents (path, &text, NULL, &local))
    {
      if (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return t;
      g_hash_table_unref (t);
      g_propagate_error (err, g_steal_pointer (&local));
      return NULL;
    }
  g_auto (GStrv) lines = g_strsplit (text, "\n", 0);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      char *name;
      gint64 gen;
      if (lines[i][0] == '\0')
        continue;
      if (!parse_line (lines[i], &name, &gen))
        {
          g_warning ("%s: line %u is not \"DEVICE GENERATION\": skipped",
                     path, i + 1);
          continue;
        }
      g_hash_table_replace (t, name, g_memdup2 (&gen, sizeof gen));
    }
  return t;
}

/* Publish t as dir's journal (an empty table removes it). */
static bool
journal_write (const char *dir, GHashTable *t, GError **err)
{
  g_autofree char *path = journal_path (dir, "");
  g_autofree char *tmp = journal_path (dir, ".tmp");
  g_autoptr (GString) gs = g_string_new (NULL);
  GHashTableIter it;
  gpointer k, v;

  if (g_hash_table_size (t) == 0)
    {
      if (unlink (path) != 0 && errno != ENOENT)
        {
          df_set_error_errno (err, errno, "remove %s", path);
          return false;
        }
      return true;
    }
  g_hash_table_iter_init (&it, t);
  while (g_hash_table_iter_next (&it, &k, &v))
    g_string_append_printf (gs, "%s %" G_GINT64_FORMAT "\n", (char *) k,
                            *(gint64 *) v);
  if (!g_file_set_contents_full (tmp, gs->str, (gssize) gs->len,
                                 G_FILE_SET_CONTENTS_NONE, 0640, err))
    return false;
  return df_store_publish (-1, tmp, path, DF_PUBLISH_REPLACE, err);
}

static gint64
table_get (GHashTable *t, const char *device)
{
  g_autofree char *key = g_ascii_strdown (device, -1);
  gint64 *v = t != NULL ? g_hash_table_lookup (t, key) : NULL;
  return v != NULL ? *v : 0;
}

/* Raise device's entry in dir's journal to at least gen, under the lock.
 * With bump, the entry becomes max(entry, gen) + 1 instead.  The entry's
 * new value in *out. */
static bool
journal_raise (const char *dir, const char *device, gint64 gen, bool bump,
               gint64 *out, GError **err)
{
  int lock = journal_lock (dir, err);
  if (lock < 0)
    return false;
  g_autoptr (GHashTable) t = journal_read (dir, err);
  bool ok = t != NULL;
  if (ok)
    {
      gint64 now = MAX (table_get (t, device), gen) + (bump ? 1 : 0);
      if (now != table_get (t, device))
        {
          gint64 *v = g_memdup2 (&now, sizeof now);
          g_hash_table_replace (t, g_ascii_strdown (device, -1), v);
          ok = journal_write (dir, t, err);
        }
      *out = now;
    }
  close (lock);
  return ok;
}

GHashTable *
df_farm_offline_journal_load (const char *dir)
{
  g_autoptr (GError) err = NULL;
  GHashTable *t = journal_read (dir, &err);
  if (t == NULL)
    g_warning ("offline boot generations: %s (the snapshot's are used)",
               err->message);
  return t;
}

gint64
df_farm_offline_generation (GHashTable *journal, const char *device,
                            gint64 generation)
{
  return MAX (generation, table_get (journal, device));
}

bool
df_farm_offline_generation_next (DfFarm *snapshot, const DfDevice *d,
                                 gint64 *generation, GError **err)
{
  g_return_val_if_fail (df_farm_offline (snapshot), false);
  return journal_raise (df_farm_dir (snapshot), d->name, d->generation, true,
                        generation, err);
}

bool
df_farm_offline_generation_note (DfFarm *snapshot, const char *device,
                                 gint64 generation, GError **err)
{
  g_return_val_if_fail (df_farm_offline (snapshot), false);
  g_autoptr (DfDevice) d = df_farm_device_get (snapshot, device, err);
  gint64 now;
  if (d == NULL)
    return false;
  if (generation < 1 || generation > d->generation + GENERATION_JUMP_MAX)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "boot generation %" G_GINT64_FORMAT " of device %s is "
                   "out of range (it is at %" G_GINT64_FORMAT ")",
                   generation, d->name, d->generation);
      return false;
    }
  return journal_raise (df_farm_dir (snapshot), d->name, generation, false,
                        &now, err);
}

gint64
df_farm_offline_generation_floor (DfFarm *farm, const char *device)
{
  g_autoptr (GError) err = NULL;
  g_autoptr (GHashTable) t = journal_read (df_farm_dir (farm), &err);
  return table_get (t, device);
}

/* Record one journal entry in farm's DB: true with *recorded when the
 * DB's generation was lower and now is gen. */
static bool
record_locked (DfFarm *farm, const char *device, gint64 gen, bool *recorded,
               GError **err)
{
  const DfParam p[] = { DF_INT (gen), DF_TEXT (device), DF_INT (gen) };
  g_autoptr (DfDbStmt) st = df_farm_query (farm,
    "UPDATE devices SET generation = ? WHERE name = ? COLLATE NOCASE "
    "AND generation < ? RETURNING name", p, G_N_ELEMENTS (p), err);
  if (st == NULL)
    return false;
  int rc = df_db_step (st, err);
  if (rc < 0)
    return false;
  *recorded = rc == 1;
  if (!*recorded)
    return true;
  g_autofree char *name = g_strdup (df_db_col_text (st, 0));
  if (df_db_step (st, err) != 0)
    return false;
  g_autofree char *detail = g_strdup_printf ("{\"generation\":%"
                                             G_GINT64_FORMAT "}", gen);
  return df_farm_audit_row (farm, "device.offline-boot", name, detail, err);
}

static bool
record_one (DfFarm *farm, const char *device, gint64 gen, GError **err)
{
  bool recorded = false;
  DfFarmTry t = { 0 };
  while (df_farm_try (farm, &t, err))
    t.ok = record_locked (farm, device, gen, &recorded, err);
  if (t.ok && recorded)
    g_message ("offline boot generations: device %s is at generation %"
               G_GINT64_FORMAT " (given while the farm DB was unreachable), "
               "now recorded", device, gen);
  return t.ok;
}

bool
df_farm_offline_replay (DfFarm *farm, GError **err)
{
  g_return_val_if_fail (!df_farm_offline (farm), false);
  const char *dir = df_farm_dir (farm);
  int lock = journal_lock (dir, err);
  if (lock < 0)
    return false;
  g_autoptr (GHashTable) t = journal_read (dir, err);
  bool ok = t != NULL;
  GHashTableIter it;
  gpointer k, v;
  if (ok)
    g_hash_table_iter_init (&it, t);
  while (ok && g_hash_table_iter_next (&it, &k, &v))
    {
      g_autoptr (GError) local = NULL;
      if (record_one (farm, k, *(gint64 *) v, &local))
        g_hash_table_iter_remove (&it);
      else if (g_error_matches (local, DF_ERROR, DF_ERROR_IO))
        {
          g_propagate_error (err, g_steal_pointer (&local));
          ok = false; /* the DB went away again: keep the rest */
        }
      else
        {
          g_warning ("offline boot generations: device %s: %s (dropped)",
                     (char *) k, local->message);
          g_hash_table_iter_remove (&it);
        }
    }
  if (t != NULL && !journal_write (dir, t, ok ? err : NULL))
    ok = false;
  close (lock);
  return ok;
}
