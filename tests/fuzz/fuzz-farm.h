/* Shared start-up of the streamsvc fuzz harnesses (fuzz-nbd, fuzz-iscsi):
 * a small real farm in a temporary directory with a 1 MiB vdisk "fz", and
 * the exports registry and session table the engines run against.  Every
 * failure here is fatal: it prints "<harness> init: <what>: <message>"
 * and exits 1. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "exports.h"
#include "farm.h"
#include "sessions.h"

/* Size of the image fuzz_farm_start imports as vdisk "fz". */
#define FUZZ_IMAGE_SIZE (1 << 20)

/* Report a start-up failure of the harness and exit 1. */
G_NORETURN void fuzz_die (const char *what, GError *err);

/* Make the temporary farm directory "<harness>-XXXXXX" (kept for the
 * process lifetime: caches live in it), silence GLib logging, create the
 * farm and import image (FUZZ_IMAGE_SIZE bytes, borrowed) as vdisk "fz"
 * version 0.  Returns the open farm (caller closes it before
 * fuzz_farm_finish) and the directory in *dir (caller frees). */
DfFarm *fuzz_farm_start (const char *harness, const uint8_t *image,
                         char **dir);

/* Add production device name/mac on vdisk "fz" with a server cache. */
void fuzz_farm_add_device (DfFarm *farm, const char *name, const char *mac);

/* The exports registry over the farm in dir and a new session table
 * (both owned by the caller for the process lifetime). */
void fuzz_farm_finish (const char *dir, DfExports **exports,
                       DfSessions **sessions);
