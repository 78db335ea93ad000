/* diskfarm: the private cache mode (PVS's Private Image).
 *
 * A device in mode private writes its own permanent layer over the version
 * it was first opened over.  Files in the device's cache directory:
 *   private.base  the pin: which version the layer is over (GKeyFile,
 *                 [private] vdisk=NAME version=N sha256=HEX; the SHA-256
 *                 of the version file names it across vdisk renames),
 *                 written once, before any data (temp file, fsync,
 *                 rename, fsync dir);
 *   private.data + private.map  the layer: the durable data + map store of
 *                 cache_persistent.c (data synced before the map entries
 *                 that point at it; FLUSH/FUA make writes stable; flock()ed
 *                 while open).
 * Why that store and not a live qcow2 layer: it is the crash-safe format
 * this code already proves (kill -9 tests), 4 KiB granular like every
 * cache; a qcow2 written live would need ordered L2/refcount updates for
 * the same guarantee.  The qcow2 form is made on demand by
 * df_cache_private_export (base + layer flattened, standalone).
 *
 * The row (cache_modes.c) says the rest: persistent, survives `device
 * reset`, pins its base (the stream service serves the pinned version, not
 * the newest one). */
#include "cache_int.h"
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

#define PIN_FILE  DF_CACHE_PIN_FILE
#define PIN_GROUP "private"

/* ---- the pin ------------------------------------------------------------ */

/* 64 lower-case hex digits. */
static bool
sha256_ok (const char *s)
{
  gsize n = 0;

  for (; s[n] != '\0'; n++)
    if (!g_ascii_isdigit (s[n]) && !(s[n] >= 'a' && s[n] <= 'f'))
      return false;
  return n == 64;
}

void
df_cache_pin_clear (DfCachePin *pin)
{
  g_clear_pointer (&pin->vdisk, g_free);
  g_clear_pointer (&pin->sha256, g_free);
  pin->version = 0;
}

bool
df_cache_pin_read (const char *dir, DfCachePin *out, GError **err)
{
  g_autofree char *path = g_build_filename (dir, PIN_FILE, NULL);
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) e = NULL;
  g_autofree char *vdisk = NULL;
  g_autofree char *sha = NULL;
  gint64 version;

  if (!g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, &e))
    {
      if (g_error_matches (e, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                     "no private image in %s", dir);
      else
        g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                     "private image pin %s: %s", path, e->message);
      return false;
    }
  vdisk = g_key_file_get_string (kf, PIN_GROUP, "vdisk", NULL);
  version = g_key_file_get_int64 (kf, PIN_GROUP, "version", &e);
  sha = g_key_file_get_string (kf, PIN_GROUP, "sha256", NULL);
  if (vdisk == NULL || e != NULL || version < 0 || version > G_MAXINT
      || !df_validate_name ("vdisk", vdisk, NULL)
      || (sha != NULL && !sha256_ok (sha)))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_CORRUPT,
                   "private image pin %s: no valid vdisk and version", path);
      return false;
    }
  out->vdisk = g_steal_pointer (&vdisk);
  out->version = (int) version;
  out->sha256 = g_steal_pointer (&sha);
  return true;
}

bool
df_cache_pin_write (const char *dir, const DfCachePin *pin, GError **err)
{
  g_autofree char *path = g_build_filename (dir, PIN_FILE, NULL);
  g_autofree char *tmp = g_strconcat (path, DF_CACHE_TMP_SUFFIX, NULL);
  g_autofree char *text = g_strdup_printf ("[" PIN_GROUP "]\nvdisk=%s\n"
                                           "version=%d\n%s%s%s", pin->vdisk,
                                           pin->version,
                                           pin->sha256 ? "sha256=" : "",
                                           pin->sha256 ? pin->sha256 : "",
                                           pin->sha256 ? "\n" : "");
  int fd;

  g_return_val_if_fail (df_validate_name ("vdisk", pin->vdisk, NULL)
                          && (pin->sha256 == NULL || sha256_ok (pin->sha256)),
                        false);
  if (g_mkdir_with_parents (dir, 0700) < 0)
    return df_set_error_errno (err, errno, "create cache directory %s", dir),
           false;
  if (g_file_test (path, G_FILE_TEST_EXISTS))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_EXISTS,
                   "private image %s is already pinned", dir);
      return false;
    }
  fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return df_set_error_errno (err, errno, "create %s", tmp), false;
  if (df_pwrite_all (fd, text, strlen (text), 0) < 0)
    {
      df_set_error_errno (err, errno, "write %s", tmp);
      close (fd);
      unlink (tmp);
      return false;
    }
  bool ok = df_store_publish (fd, tmp, path, DF_PUBLISH_REPLACE, err);
  close (fd);
  return ok;
}

/* ---- the store ----------------------------------------------------------- */

bool
df_cache_private_open (df_cache *c, GError **err)
{
  g_autofree char *pin = g_build_filename (c->dir, PIN_FILE, NULL);

  /* The layer means nothing without the version under it: the pin is
   * written first, so data never exists without one. */
  if (!g_file_test (pin, G_FILE_TEST_EXISTS))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "private image in %s has no pinned version (%s)", c->dir,
                   PIN_FILE);
      return false;
    }
  return df_cache_durable_open (c, DF_CACHE_PRIVATE_PREFIX, "private image",
                                err);
}

/* ---- export -------------------------------------------------------------- */

bool
df_cache_private_export (df_blk *base, const char *dir, const char *path,
                         DfImageFormat fmt, df_progress_cb progress,
                         void *opaque, GError **err)
{
  g_autofree char *map = g_build_filename (dir, DF_CACHE_PRIVATE_PREFIX
                                          DF_CACHE_MAP_SUFFIX, NULL);
  const DfCacheMode mode = { .kind = DF_CACHE_PRIVATE };
  g_autoptr (df_blk) img = NULL;

  g_return_val_if_fail (fmt == DF_FMT_RAW || fmt == DF_FMT_QCOW2, false);
  if (!g_file_test (map, G_FILE_TEST_EXISTS))
    {
      /* Opening would make an empty one: there is nothing to export. */
      g_set_error (err, DF_ERROR, DF_ERROR_NOT_FOUND,
                   "no private image in %s (the device has not written one "
                   "yet)", dir);
      return false;
    }
  img = df_cache_open (base, dir, &mode, 0, err); /* BUSY while served */
  if (img == NULL)
    return false;
  return fmt == DF_FMT_RAW
           ? df_raw_write_from_blk (img, path, progress, opaque, err)
           : df_qcow2_write_from_blk (img, path, progress, opaque, err);
}
