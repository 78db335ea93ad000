/* diskfarm: the farm directory and its database (SQLite in WAL mode, or
 * PostgreSQL, behind the backend seam of db.h).
 *
 * A farm directory holds farm.db (unless the DB is PostgreSQL), store/,
 * cache/, boot/, run/.  The schema
 * is created and upgraded by numbered migrations (migrations.c).  Every
 * mutating accessor runs in one transaction together with its audit-log
 * row, so a failed call changes nothing.
 *
 * Ownership: every DfXxx returned by a getter is newly allocated; free it
 * with df_xxx_free (g_autoptr works).  Lists are GPtrArray with the free
 * function set.  A DfFarm is used by one thread at a time (open one per
 * thread; the engine handles locking between them and between processes,
 * and a mutator that loses a PostgreSQL serialization race is re-run).
 */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "common.h" /* DfTlsMode */

typedef struct DfFarm DfFarm;

/* Open <dir>/farm.db.  create: make the directory tree and the DB when
 * missing (init); otherwise a missing farm is DF_ERROR_NOT_FOUND with a
 * message telling to run `diskfarm init`.  Applies pending migrations.
 * who: the actor recorded in the audit log ("console:root", "streamsvc"). */
DfFarm *df_farm_open (const char *dir, bool create, const char *who,
                      GError **err);
/* The same with the farm's DB at database: NULL or "" is <dir>/farm.db,
 * else an SQLite file path or a PostgreSQL URI (postgresql://...) or
 * conninfo ("host=... dbname=..."; see df_db_target_is_pg).  On
 * PostgreSQL the database must exist; create makes the directory tree and
 * the schema in it, and without create a database without the farm's
 * schema is DF_ERROR_NOT_FOUND.  No message shows a password. */
DfFarm *df_farm_open_db (const char *dir, const char *database, bool create,
                         const char *who, GError **err);
void df_farm_close (DfFarm *farm);

/* ---- offline mode: the local snapshot (snapshot.c) ----
 * A server of a farm on PostgreSQL keeps a copy of the farm DB (every
 * table but the audit log) in <dir>/run/farm-snapshot.db, an SQLite file
 * rewritten whole and published atomically (temp file, fsync, rename:
 * df_store_publish) at start and after every change notification
 * (watch.h).  While the DB is unreachable the daemons read the snapshot,
 * so known devices keep booting; every change (a mutator's write scope:
 * auto-add, a new boot generation, the console) fails on it with
 * DF_ERROR_IO "farm DB NAME is unreachable (offline: ...)". */
#define DF_FARM_SNAPSHOT "farm-snapshot.db"
/* <dir>/run/farm-snapshot.db (new string). */
char *df_farm_snapshot_path (const char *dir);
/* Copy farm (on PostgreSQL) into dir's snapshot, all in one read
 * transaction of farm's DB, and publish it. */
bool df_farm_snapshot_write (DfFarm *farm, GError **err);
/* Open dir's snapshot for reading in place of database (the unreachable
 * DB, named in the refusals of writes).  NULL + err (DF_ERROR_NOT_FOUND)
 * when there is none. */
DfFarm *df_farm_open_snapshot (const char *dir, const char *database,
                               const char *who, GError **err);
/* ---- offline boot generations (offline.c) ----
 * A boot while the DB is unreachable still gets a new generation (a
 * reboot gives a clean machine: a new server/ram cache), which the DB
 * cannot take: it goes to the host's journal <dir>/run/offline-generations
 * (one line "DEVICE GENERATION", under an flock, published atomically).
 * bootstrapsvc journals the generations it gives
 * (df_farm_device_new_generation on a snapshot) and tells each stream
 * server its script names, which journal it in its own farm directory
 * (df_farm_offline_generation_note, admin API POST
 * /v1/offline-generations); a snapshot's device rows carry the larger of
 * the snapshot's generation and the journal's.  When the DB answers again
 * the change watch's snapshot writer records each entry
 * (df_farm_offline_replay: a generation only goes up, audit row
 * device.offline-boot) and empties the journal, and an online new
 * generation goes above the journal's entry, so a generation given
 * offline is never given again. */
/* On a snapshot: record that device booted at generation (a stream
 * server learns it from the bootstrap server that gave it).  Unknown
 * device: DF_ERROR_NOT_FOUND; a generation below 1 or absurdly far
 * ahead: DF_ERROR_INVALID; a lower one than the journal's changes
 * nothing. */
bool df_farm_offline_generation_note (DfFarm *snapshot, const char *device,
                                      gint64 generation, GError **err);
/* On a reachable DB: record the journal of farm's directory in the DB
 * and empty it (entries of removed devices are dropped).  False + err
 * (the entries not yet recorded stay) when the DB fails. */
bool df_farm_offline_replay (DfFarm *farm, GError **err);

/* df_farm_open_db without create, but when the PostgreSQL DB is
 * unreachable and dir has a snapshot, that snapshot (logged): a daemon
 * started during an outage serves known devices. */
DfFarm *df_farm_open_or_snapshot (const char *dir, const char *database,
                                  const char *who, GError **err);
/* The farm DB answers a trivial query now. */
bool df_farm_ping (DfFarm *farm, GError **err);
/* farm is a snapshot (df_farm_open_snapshot). */
bool df_farm_offline (DfFarm *farm);
/* err says the farm DB could not be reached (connection refused or lost),
 * not that a statement or its data was wrong: the cue to fall back on
 * the snapshot.  Only for a PostgreSQL database. */
bool df_farm_error_unreachable (const char *database, const GError *err);

/* Run as root: create the diskfarm system user and group if missing and
 * give them the farm at dir (setgid directories 02750, files 0640 or
 * stricter, nothing for others).  A no-op when not root. */
bool df_farm_give_to_service_user (const char *dir, GError **err);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfFarm, df_farm_close)

const char *df_farm_dir (DfFarm *farm);
/* The farm DB for messages: its file, or its PostgreSQL connection
 * parameters without the password (borrowed). */
const char *df_farm_db_name (DfFarm *farm);
/* database names a PostgreSQL DB rather than an SQLite file. */
bool df_farm_db_is_remote (const char *database);
/* A --db / [farm] database value as it may be printed: a PostgreSQL one
 * without its password (new string; NULL for NULL). */
char *df_farm_db_redact (const char *database);
int df_farm_schema_version (DfFarm *farm);
/* The farm's identity: an RFC 4122 UUID ("xxxxxxxx-xxxx-4xxx-...") made
 * once when the farm was created (or upgraded to schema 4), never changed.
 * streamsvc reports it in /v1/health ("farm") so a console can tell its
 * own servers from another farm's.  Borrowed, valid while farm is open. */
const char *df_farm_uuid (DfFarm *farm);
/* Paths inside the farm (newly allocated).  store_dir: <farm>/store/<S>/
 * where S is the vdisk's store directory, fixed when it was added (its
 * name then; a rename keeps it); for a vdisk not yet added, the one
 * df_farm_vdisk_add will give it.  version_path: the file of version N as
 * its row records it, or <vdisk>.<N>.qcow2 in the store for a version not
 * yet added. */
char *df_farm_store_dir (DfFarm *farm, const char *vdisk);
char *df_farm_version_path (DfFarm *farm, const char *vdisk, int number);
char *df_farm_cache_dir (DfFarm *farm, const char *device);

/* ---- vdisks and versions --------------------------------------------- */

typedef enum {
  DF_VSTATE_MAINTENANCE, DF_VSTATE_TEST, DF_VSTATE_PRODUCTION,
  DF_VSTATE_PENDING,
} DfVersionState;
const char *df_version_state_name (DfVersionState s);
bool df_version_state_parse (const char *s, DfVersionState *out, GError **err);

/* Which firmware can boot a disk.  UNKNOWN: not inspected yet. */
typedef enum {
  DF_FIRMWARE_UNKNOWN, DF_FIRMWARE_NONE, DF_FIRMWARE_BIOS, DF_FIRMWARE_UEFI,
  DF_FIRMWARE_BOTH,
} DfFirmware;

/* What inspection found on a disk. */
typedef struct {
  bool gpt;                   /* GPT partition table (else MBR or none) */
  bool mbr_boot_code;         /* sector 0's boot code area is not all zero */
  bool bios_boot_partition;   /* GPT BIOS boot partition (GRUB's core) */
  bool esp_loader;            /* an EFI System Partition holding
                               * \EFI\BOOT\BOOTX64.EFI */
} DfBootFacts;

/* The rule: BIOS boots an MBR disk through its boot code, a GPT disk only
 * through a BIOS boot partition (the protective MBR's code alone cannot
 * find a GPT partition); UEFI boots an ESP holding the removable-media
 * loader. */
DfFirmware df_firmware_from_facts (const DfBootFacts *f);
/* "bios", "uefi", "bios+uefi", "none"; NULL for UNKNOWN (the DB's
 * spelling, and the one inspect prints). */
const char *df_firmware_name (DfFirmware fw);
/* Can fw boot under this client firmware?  UNKNOWN: assumed yes. */
bool df_firmware_boots_bios (DfFirmware fw);
bool df_firmware_boots_uefi (DfFirmware fw);

/* DF_DEFAULT_EFI_LOADER: what UEFI firmware (and iPXE's sanboot) starts
 * from a disk without boot entries. */
#define DF_DEFAULT_EFI_LOADER "\\EFI\\BOOT\\BOOTX64.EFI"
/* An EFI loader path as `sanboot --filename` takes it: starts with '\',
 * at most 255 bytes of [A-Za-z0-9._-] and '\', no empty component, ends
 * in ".efi" (any case).  DF_ERROR_INVALID naming the fault otherwise. */
bool df_efi_loader_path_ok (const char *path, GError **err);

typedef struct {
  gint64 id;
  char *name;
  uint64_t virtual_size;
  char *description;
  char *created;        /* ISO 8601 UTC */
  DfFirmware firmware;  /* as `vdisk inspect` last recorded it */
  char *efi_loader;     /* NULL: DF_DEFAULT_EFI_LOADER */
} DfVdisk;
void df_vdisk_free (DfVdisk *v);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfVdisk, df_vdisk_free)

typedef struct {
  gint64 id;
  char *vdisk;          /* vdisk name */
  int number;           /* 0 = base */
  int parent;           /* -1 for a base */
  char *file;           /* file name relative to store/<vdisk>/ */
  char *sha256;         /* 64 hex, or NULL while maintenance */
  uint64_t virtual_size;
  uint64_t file_size;
  DfVersionState state;
  char *pending_state;  /* target state when state == PENDING, else NULL */
  char *pending_at;     /* ISO 8601 or NULL */
  char *created;
} DfVersion;
void df_version_free (DfVersion *v);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfVersion, df_version_free)

/* Add a vdisk together with its base version 0 (state production).
 * DF_ERROR_EXISTS when the name is taken. */
bool df_farm_vdisk_add (DfFarm *farm, const char *name, uint64_t virtual_size,
                        const char *base_file, const char *sha256,
                        uint64_t file_size, GError **err);
DfVdisk *df_farm_vdisk_get (DfFarm *farm, const char *name, GError **err);
GPtrArray *df_farm_vdisk_list (DfFarm *farm, GError **err);   /* DfVdisk */
/* Set (or clear, with NULL) a vdisk's free-text description (<= 1024 B). */
bool df_farm_vdisk_set_description (DfFarm *farm, const char *name,
                                    const char *text, GError **err);
/* Record what `vdisk inspect` found (audit "vdisk.firmware"). */
bool df_farm_vdisk_set_firmware (DfFarm *farm, const char *name,
                                 DfFirmware fw, GError **err);
/* Set (or clear, with NULL) the EFI loader a UEFI sanboot of this vdisk
 * starts (df_efi_loader_path_ok).  A vdisk with a loader boots under UEFI
 * whatever inspection found. */
bool df_farm_vdisk_set_efi_loader (DfFarm *farm, const char *name,
                                   const char *path, GError **err);
/* Rename a vdisk.  Its store directory and files keep their names (the
 * store directory is fixed at creation, df_farm_store_dir follows it), so
 * nothing moves on disk: one DB transaction, crash-safe, and sessions
 * already open keep reading.  Devices and collections follow (they hold
 * its id); its own auto-merge depth follows.  Exports and iSCSI targets
 * take the new name (vdisk/NEW, ...:vdisk.NEW) from the next connection.
 * DF_ERROR_EXISTS when new_name is taken; DF_ERROR_BUSY while it has a
 * maintenance version (its writes are kept under the vdisk's name). */
bool df_farm_vdisk_rename (DfFarm *farm, const char *name,
                           const char *new_name, GError **err);
/* Refused (DF_ERROR_BUSY) while a device is assigned to it. */
bool df_farm_vdisk_remove (DfFarm *farm, const char *name, GError **err);

/* A version in state maintenance also starts a new boot generation for
 * the vdisk's maintenance device(s), in the same transaction (audit
 * "device.generation", cause "vdisk@N"). */
bool df_farm_version_add (DfFarm *farm, const char *vdisk, int number,
                          int parent, const char *file, const char *sha256,
                          uint64_t virtual_size, uint64_t file_size,
                          DfVersionState state, GError **err);
DfVersion *df_farm_version_get (DfFarm *farm, const char *vdisk, int number,
                                GError **err);
GPtrArray *df_farm_version_list (DfFarm *farm, const char *vdisk,
                                 GError **err);                /* DfVersion */
/* Newest version whose state is production (types production), test or
 * production (type test), or the maintenance version (type maintenance). */
DfVersion *df_farm_version_for_type (DfFarm *farm, const char *vdisk,
                                     const char *device_type, GError **err);
bool df_farm_version_set_state (DfFarm *farm, const char *vdisk, int number,
                                DfVersionState state, GError **err);

/* ---- versioning (versions.c) ---- */

/* Seal maintenance version N: record its sha256 (64 lower-case hex) and
 * file size, state test.  DF_ERROR_INVALID when N is not maintenance. */
bool df_farm_version_seal (DfFarm *farm, const char *vdisk, int number,
                           const char *sha256, uint64_t file_size,
                           GError **err);
/* Schedule a sealed version's promotion to target (test|production) at
 * `at` (UTC "YYYY-MM-DDTHH:MM:SSZ"): state pending until then. */
bool df_farm_version_schedule (DfFarm *farm, const char *vdisk, int number,
                               DfVersionState target, const char *at,
                               GError **err);
/* Apply every schedule due now (of vdisk, or of all vdisks when NULL);
 * *applied (nullable) receives the count.  Audit "version.promote". */
bool df_farm_versions_apply_pending (DfFarm *farm, const char *vdisk,
                                     guint *applied, GError **err);
/* Names of the devices whose type selects this version now, or whose
 * private image is over it (cache mode private: the version its pin
 * records, df_cache_pin_read) (new array of strings). */
GPtrArray *df_farm_version_devices (DfFarm *farm, const char *vdisk,
                                    int number, GError **err);
/* Delete a version row.  DF_ERROR_BUSY while a device selects it, it has a
 * pending promotion, or another version is stacked on it.  The caller
 * removes the file afterwards. */
bool df_farm_version_delete (DfFarm *farm, const char *vdisk, int number,
                             GError **err);
/* Farm settings (key: [A-Za-z0-9._-]).  get: new string, or NULL with *err
 * unset when absent.  set: value NULL removes.  Audited. */
char *df_farm_setting_get (DfFarm *farm, const char *key, GError **err);
bool df_farm_setting_set (DfFarm *farm, const char *key, const char *value,
                          GError **err);
/* A secret setting shared by the farm's servers: value is stored under key
 * unless the key has one already (the first server wins, in one
 * transaction); *stored receives what the farm holds (new string: the
 * caller wipes it).  The audit row records the creation, never the value. */
bool df_farm_setting_init_secret (DfFarm *farm, const char *key,
                                  const char *value, char **stored,
                                  GError **err);

/* The bearer token streamsvc's admin API asks of TCP clients (every
 * endpoint but /metrics and /v1/health): the secret setting
 * DF_ADMIN_TOKEN_SETTING, 64 hex digits, in farm.db (0640, the diskfarm
 * group's), so every server of the farm and its console share it.  With
 * create, one is made when the farm has none (diskfarm init, streamsvc at
 * start: older farms get theirs on first need).  New secret string
 * (df_secret_free); NULL with *err unset when absent and !create. */
#define DF_ADMIN_TOKEN_SETTING "admin_token"
#define DF_ADMIN_TOKEN_BYTES 32
char *df_farm_admin_token (DfFarm *farm, bool create, GError **err);

/* Auto-merge depth (versions.c): after a seal that makes a version's chain
 * longer than N files, its updates are merged into one layer.  N is 0
 * (off) or 2-DF_AUTO_MERGE_DEPTH_MAX.  A vDisk's own value, when it has
 * one, wins over the farm-wide one; without either it is 0.  Stored in the
 * settings auto_merge_depth and vdisk.<name>.auto_merge_depth. */
#define DF_AUTO_MERGE_DEPTH_MAX 256
bool df_auto_merge_depth_check (gint64 depth, GError **err);
/* Depth in force for vdisk (NULL: the farm-wide value).  *own (nullable)
 * is set when the vdisk has its own value.  Unreadable or malformed
 * settings count as 0 (off). */
int df_farm_auto_merge_depth (DfFarm *farm, const char *vdisk, bool *own);
/* Set vdisk's own depth (vdisk NULL: the farm-wide one).  depth -1 drops
 * the vdisk's own value so the farm's applies again (farm: back to 0). */
bool df_farm_auto_merge_depth_set (DfFarm *farm, const char *vdisk,
                                   int depth, GError **err);

/* ---- collections ------------------------------------------------------ */

typedef struct {
  gint64 id;
  char *name;
  char *description;
  char *vdisk;          /* default vdisk for new devices, or NULL */
  char *created;
} DfCollection;
void df_collection_free (DfCollection *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfCollection, df_collection_free)

bool df_farm_collection_add (DfFarm *farm, const char *name,
                             const char *description, const char *vdisk,
                             GError **err);
DfCollection *df_farm_collection_get (DfFarm *farm, const char *name,
                                      GError **err);
GPtrArray *df_farm_collection_list (DfFarm *farm, GError **err);
/* Change a collection.  Each of new_name, description and vdisk (its
 * default vDisk) is kept when NULL; "" clears description or vdisk.  A
 * rename keeps the devices in it and moves auto-add along with it. */
bool df_farm_collection_set (DfFarm *farm, const char *name,
                             const char *new_name, const char *description,
                             const char *vdisk, GError **err);
/* Remove a collection.  DF_ERROR_BUSY, naming them, while devices are in
 * it, unless force: then they stay, in no collection.  Always DF_ERROR_BUSY
 * while auto-add (enabled) adds devices to it. */
bool df_farm_collection_remove (DfFarm *farm, const char *name, bool force,
                                GError **err);

/* ---- devices ---------------------------------------------------------- */

typedef struct {
  gint64 id;
  char *name;
  char *mac;            /* canonical aa:bb:cc:dd:ee:ff */
  char *collection;     /* may be NULL */
  char *type;           /* production | test | maintenance */
  char *vdisk;          /* assigned vdisk name */
  char *cache_mode;     /* as df_cache_mode_parse accepts */
  uint64_t quota;       /* bytes, 0 = none */
  gint64 generation;    /* boot generation, bumped by reset */
  char *created;
  bool has_nbd_psk;     /* read only: an NBD TLS key is set (nbd_psk.c) */
} DfDevice;
void df_device_free (DfDevice *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfDevice, df_device_free)

/* Checks: valid name, unique name (case-insensitive: iSCSI names are; "PC01"
 * is refused while pc01 exists) and MAC, a unicast MAC (not zero,
 * broadcast or multicast), a cache mode df_cache_mode_parse accepts, a
 * quota of 0 or at least DF_CACHE_BLOCK_SIZE, vdisk and collection exist,
 * and one maintenance device per vdisk (DF_ERROR_EXISTS naming the one
 * there is; update checks it too when type or vdisk change). */
bool df_farm_device_add (DfFarm *farm, const DfDevice *d, GError **err);
/* By name in any case, or by MAC when key parses as a MAC.  The device
 * returned carries its name as stored. */
DfDevice *df_farm_device_get (DfFarm *farm, const char *key, GError **err);
GPtrArray *df_farm_device_list (DfFarm *farm, const char *collection,
                                GError **err);                 /* DfDevice */
/* Replace the mutable fields (mac, collection, type, vdisk, cache_mode,
 * quota) of the device named d->name; same checks as add. */
bool df_farm_device_update (DfFarm *farm, const DfDevice *d, GError **err);
bool df_farm_device_remove (DfFarm *farm, const char *name, GError **err);
/* The version d's private image is over (its pin in d's cache directory,
 * df_cache_pin_read): found in d's vdisk by number and the pin's SHA-256
 * (so it survives a vdisk rename), else in the vdisk the pin names, then
 * *other_vdisk is true (d was moved to another vdisk: the image cannot be
 * served, only exported).  True + *out NULL: no private image.  True +
 * *out: a new version.  False + DF_ERROR_NOT_FOUND when that version is
 * gone, DF_ERROR_CORRUPT for a bad pin. */
bool df_farm_device_pin (DfFarm *farm, const DfDevice *d, DfVersion **out,
                         bool *other_vdisk, GError **err);
/* Start a new boot generation; *generation receives the new value.  On
 * a snapshot (offline) the generation goes to the local journal (see
 * "offline boot generations" above). */
bool df_farm_device_new_generation (DfFarm *farm, const char *name,
                                    gint64 *generation, GError **err);

/* ---- audit log -------------------------------------------------------- */

typedef struct {
  gint64 id;
  char *at;             /* ISO 8601 UTC */
  char *who;
  char *action;         /* "device.add", "vdisk.import", ... */
  char *object;         /* name of the object changed */
  char *detail;         /* free text / JSON */
} DfAudit;
void df_audit_free (DfAudit *a);
/* Record one entry (mutators call this inside their own transaction). */
bool df_farm_audit (DfFarm *farm, const char *action, const char *object,
                    const char *detail, GError **err);
GPtrArray *df_farm_audit_list (DfFarm *farm, guint limit, GError **err);
/* Entries newest first, those matching every given field (borrowed). */
typedef struct {
  guint limit;          /* at most this many; 0 = all */
  const char *object;   /* NULL: any; else this object and its "X@N" */
  const char *action;   /* NULL: any; "device.add"; "device": device.* */
  const char *since;    /* NULL, or UTC "YYYY-MM-DDTHH:MM:SSZ": at or after */
} DfAuditFilter;
GPtrArray *df_farm_audit_query (DfFarm *farm, const DfAuditFilter *f,
                                GError **err);

/* ---- transactions for multi-step console work ------------------------- */
/* The outermost begin takes the write lock (waits up to 5 s, then
 * DF_ERROR_BUSY); a nested one is a savepoint.  Mutators called inside
 * nest the same way, so commit keeps all of them and rollback none. */
bool df_farm_begin (DfFarm *farm, GError **err);
bool df_farm_commit (DfFarm *farm, GError **err);
void df_farm_rollback (DfFarm *farm);

/* ---- servers (servers.c) ---------------------------------------------- */

/* What a server reports in each heartbeat (registry.c). */
typedef struct {
  gint64 sessions;          /* live sessions */
  gint64 bytes_per_s;       /* bytes served per second since the last one */
  gint64 cpu_permille;      /* its CPU use over the interval, 1000 = 1 core */
  gint64 free_bytes;        /* free space of its store's file system */
  /* read back only: a heartbeat records what the server's store state
   * says (files there: present, verified or corrupt; verified) */
  gint64 versions_held;
  gint64 versions_verified;
} DfServerLoad;

/* A stream server of the farm, as the bootstrap service lists it in boot
 * scripts.  Health is not stored: it is asked live from
 * http://address:admin_port/v1/health. */
typedef struct {
  gint64 id;
  char *name;
  char *address;        /* IPv4/IPv6 literal or host name */
  guint16 iscsi_port;
  guint16 nbd_port;
  guint16 admin_port;
  int power;            /* relative capacity 1-1000: load = sessions/power */
  char *created;
  /* Registry (registry.c): what the server said of itself.  Zero/NULL
   * for a row the admin added that no server has registered under. */
  char *kind;           /* DF_SERVER_KIND_STREAM | DF_SERVER_KIND_BOOTSTRAP */
  gint64 registered_ms; /* unix ms of the last registration, 0: never */
  gint64 heartbeat_ms;  /* unix ms of the last heartbeat, 0: never */
  gint64 timeout_ms;    /* unhealthy when no heartbeat for this long */
  DfServerLoad load;    /* as of the last heartbeat */
  char *software;       /* its diskfarm version, or NULL */
  /* Its floating iSCSI portal (an IP literal its host holds and a
   * survivor adopts: keepalived VRRP, portal.c), or NULL: boot scripts
   * name its address.  Set by `server add/set` only, never by a
   * registration. */
  char *portal;
} DfServer;
void df_server_free (DfServer *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfServer, df_server_free)

/* A portal is an IPv4/IPv6 literal (it moves between hosts: no name),
 * not a wildcard, loopback or multicast address. */
bool df_farm_check_portal (const char *portal, GError **err);
/* Where initiators reach s's iSCSI target: its portal, else its address
 * (borrowed from s).  Boot scripts and media name this. */
const char *df_server_iscsi_address (const DfServer *s);

/* Checks: valid name, an address df_validate_host accepts, a portal
 * df_farm_check_portal accepts (or none), ports 1-65535, power 1-1000;
 * DF_ERROR_EXISTS when the name is taken. */
bool df_farm_server_add (DfFarm *farm, const DfServer *s, GError **err);
DfServer *df_farm_server_get (DfFarm *farm, const char *name, GError **err);
GPtrArray *df_farm_server_list (DfFarm *farm, GError **err);  /* DfServer */
/* Replace address, ports, power and portal of the server named s->name; same
 * checks as add; DF_ERROR_NOT_FOUND when there is none.  Boot scripts
 * use the new values from their next fetch. */
bool df_farm_server_update (DfFarm *farm, const DfServer *s, GError **err);
bool df_farm_server_remove (DfFarm *farm, const char *name, GError **err);

/* ---- floating portals (portal.c) ---------------------------------------- */
/* Each stream server's portal floats: keepalived (VRRP) on every server
 * with a portal holds its own (MASTER, priority 200) and backs up the
 * others' (BACKUP: priority 150 for the most powerful other server, one
 * less per rank, by power then name), each instance tracking the local
 * streamsvc's /v1/health; router ids are vrid_base + the server's index
 * among the servers with a portal, by name. */
typedef struct {
  const char *interface;    /* this host's NIC on the stream LAN */
  guint vrid_base;          /* first virtual_router_id (1-255) */
  const char *health_url;   /* NULL: http://ADDRESS:ADMIN-PORT/v1/health */
} DfPortalConfOpts;
#define DF_PORTAL_VRID_BASE 51
/* The priority host has for owner's portal: 200 own, 1-150 a backup, 0
 * when host has no portal (takes no part). */
int df_portal_priority (GPtrArray *servers, const char *owner,
                        const char *host);
/* keepalived.conf for server self from servers (DfServer, borrowed): new
 * string, or NULL + DF_ERROR_INVALID (self has no portal, a bad interface
 * or URL, router ids past 255). */
char *df_portal_keepalived_render (GPtrArray *servers, const char *self,
                                   const char *farm_uuid,
                                   const DfPortalConfOpts *o, GError **err);
/* The same from the farm's registry; DF_ERROR_NOT_FOUND for no server
 * self. */
char *df_farm_portal_keepalived_conf (DfFarm *farm, const char *self,
                                      const DfPortalConfOpts *o,
                                      GError **err);

/* Auto-add of unknown devices booting through bootstrap (kept with
 * df_farm_setting_get/set of versions.c): when enabled, a
 * device whose MAC is unknown is added to collection (which must have a
 * default vdisk) under a name made from name_template: "{mac}" becomes the
 * MAC as 12 hex digits, "{n}" the smallest number >= 1 giving a free name.
 * Settings keys: auto-add.enabled, auto-add.collection, auto-add.template. */
typedef struct {
  bool enabled;
  char *collection;     /* NULL when unset */
  char *name_template;  /* default DF_AUTO_ADD_TEMPLATE */
} DfAutoAdd;
#define DF_AUTO_ADD_TEMPLATE "pc-{mac}"
void df_auto_add_free (DfAutoAdd *a);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfAutoAdd, df_auto_add_free)
DfAutoAdd *df_farm_auto_add_get (DfFarm *farm, GError **err);
/* Validates the collection (exists, has a vdisk) and template when
 * enabling; stores all three settings in one transaction. */
bool df_farm_auto_add_set (DfFarm *farm, const DfAutoAdd *a, GError **err);
/* Expand a template for mac (canonical) and number n: new string, or NULL
 * + err when the template is invalid or the result is not a valid name. */
char *df_auto_add_name (const char *name_template, const char *mac, guint n,
                        GError **err);
/* Add the device for mac as auto-add says; *name receives its name.
 * DF_ERROR_UNSUPPORTED when auto-add is disabled. */
bool df_farm_auto_add_device (DfFarm *farm, const char *mac, char **name,
                              GError **err);

/* The older form of df_farm_chap_get (kept for callers on other
 * branches): *user and *secret receive new strings, or NULL when the
 * device has none or does not exist.  Free *secret with df_secret_free. */
bool df_farm_device_chap (DfFarm *farm, const char *device, char **user,
                          char **secret, GError **err);

/* ---- NBD TLS (nbd_psk.c) ---- */
/* A device's NBD pre-shared key: the TLS PSK identity is the device
 * name, the key DF_NBD_PSK_BYTES random bytes, kept as lowercase hex (the
 * key part of nbdkit's "identity:hexkey" PSK file lines). */
#define DF_NBD_PSK_BYTES 32
/* Give device (by name, any case) a new random key, replacing any; *hex
 * receives it (new; free with df_secret_free).  Audited as
 * "device.nbd-psk" without the key.  DF_ERROR_NOT_FOUND: no device. */
bool df_farm_nbd_psk_generate (DfFarm *farm, const char *device, char **hex,
                               GError **err);
/* Remove device's key (none is fine). */
bool df_farm_nbd_psk_clear (DfFarm *farm, const char *device, GError **err);
/* What a TLS identity (a device name, any case) stands for. */
typedef struct {
  char *device;  /* as stored */
  char *mac;     /* canonical */
  char *psk_hex; /* NULL when the device has no key */
} DfNbdIdentity;
void df_nbd_identity_free (DfNbdIdentity *id); /* wipes psk_hex */
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfNbdIdentity, df_nbd_identity_free)
/* DF_ERROR_NOT_FOUND when no device has that name; DF_ERROR_INVALID when
 * identity is not a device name. */
DfNbdIdentity *df_farm_nbd_identity (DfFarm *farm, const char *identity,
                                     GError **err);
/* The farm's NBD TLS policy (setting nbd-tls): *set false and *mode
 * DF_TLS_OFF when never set.  streamsvc's --tls and diskfarm.conf
 * [streamsvc] tls win over it. */
#define DF_SETTING_NBD_TLS "nbd-tls"
bool df_farm_nbd_tls_get (DfFarm *farm, DfTlsMode *mode, bool *set,
                          GError **err);
bool df_farm_nbd_tls_set (DfFarm *farm, DfTlsMode mode, GError **err);

/* ---- CHAP (chap.c) ---- */
/* Per-device iSCSI CHAP credentials (schema migration 3).  Secrets are
 * 12-255 bytes without NUL (RFC 7143 12.1.3: >= 96 bits); the mutual
 * (target) secret must differ from the initiator secret.  Never logged:
 * the audit row records the mode only. */
#define DF_CHAP_SECRET_MIN 12u
#define DF_CHAP_SECRET_MAX 255u

typedef struct {
  char *device;          /* device name */
  char *user;            /* NULL: no CHAP for this device */
  char *secret;          /* NULL when user is */
  char *mutual_secret;   /* NULL: one-way CHAP */
  gint64 generation;     /* device boot generation */
  /* The access rule of the device's target, as df_farm_chap_get applies
   * the farm's iscsi-chap policy (vdisk targets: all zero). */
  bool chap_required;    /* no login without CHAP */
  char *initiator;       /* the one InitiatorName accepted, NULL: any */
  char *initiator_setting; /* the device's own: NULL (default), "any" or
                            * an iSCSI name */
} DfChap;
void df_chap_free (DfChap *c);  /* wipes the secrets (df_secret_free) */
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfChap, df_chap_free)

bool df_chap_validate_secret (const char *what, const char *secret,
                              size_t len, GError **err);
bool df_chap_validate_user (const char *user, GError **err);
/* Set (user non-NULL) or clear (user, secret, mutual all NULL) a device's
 * credentials.  DF_ERROR_NOT_FOUND, DF_ERROR_EXISTS (user taken),
 * DF_ERROR_INVALID (rules above). */
bool df_farm_chap_set (DfFarm *farm, const char *device, const char *user,
                       const char *secret, const char *mutual, GError **err);
/* By device name or MAC; DF_ERROR_NOT_FOUND for an unknown device. */
DfChap *df_farm_chap_get (DfFarm *farm, const char *key, GError **err);
/* The device whose CHAP user is user; DF_ERROR_NOT_FOUND when none. */
DfChap *df_farm_chap_find_user (DfFarm *farm, const char *user,
                                GError **err);
/* Names of devices without CHAP (new array of strings). */
GPtrArray *df_farm_chap_open_devices (DfFarm *farm, GError **err);

/* The farm's iSCSI policy (setting DF_ISCSI_CHAP_SETTING, `diskfarm farm
 * set iscsi-chap`).  required: a device target refuses every login
 * without CHAP (a device without credentials cannot log in), accepts by
 * default only its boot script's InitiatorName, and discovery without
 * CHAP lists no device target.  optional (the default): a device without
 * credentials is open, as before.  vdisk (inspection, read-only) targets
 * follow no CHAP rule. */
#define DF_ISCSI_CHAP_SETTING "iscsi_chap"
typedef enum {
  DF_ISCSI_CHAP_OPTIONAL,
  DF_ISCSI_CHAP_REQUIRED,
} DfIscsiChapPolicy;
bool df_iscsi_chap_policy_parse (const char *s, DfIscsiChapPolicy *out,
                                 GError **err);
const char *df_iscsi_chap_policy_name (DfIscsiChapPolicy p);
DfIscsiChapPolicy df_farm_iscsi_chap_policy (DfFarm *farm);
bool df_farm_iscsi_chap_policy_set (DfFarm *farm, DfIscsiChapPolicy p,
                                    GError **err);

/* An iSCSI name (RFC 3720 3.2.6: iqn., eui. or naa., at most 223 bytes
 * of [a-z0-9.:-], compared case-insensitively), "what" naming it. */
bool df_validate_iscsi_name (const char *what, const char *name,
                             GError **err);
/* The InitiatorName a device's target accepts: initiator NULL restores
 * the default (its boot script's name when the policy is required, any
 * otherwise), DF_INITIATOR_ANY accepts any, else that iSCSI name only.
 * Audited.  DF_ERROR_NOT_FOUND, DF_ERROR_INVALID. */
#define DF_INITIATOR_ANY "any"
bool df_farm_device_initiator_set (DfFarm *farm, const char *device,
                                   const char *initiator, GError **err);
/* ---- server registry (registry.c) -------------------------------------- */
/* Each streamsvc (and bootstrapsvc) that has a server name registers at
 * start and heartbeats every interval (default DF_HEARTBEAT_INTERVAL_MS);
 * a server whose last heartbeat is older than its timeout (default
 * DF_HEARTBEAT_MISSED intervals) is unhealthy.  Times are unix ms taken
 * from the writer's and the reader's clocks (hosts of a farm keep NTP
 * time: a skew counts against the timeout).  Registration is audited
 * ("server.register") when it creates the row or changes its address,
 * ports, power or kind; heartbeats and store-state records are telemetry
 * and are not. */
#define DF_SERVER_KIND_STREAM "streamsvc"
#define DF_SERVER_KIND_BOOTSTRAP "bootstrapsvc"
#define DF_HEARTBEAT_INTERVAL_MS 2000
#define DF_HEARTBEAT_MISSED 3

typedef enum {
  DF_SERVER_NEVER_SEEN = 0, /* no heartbeat ever (a row `server add` made) */
  DF_SERVER_HEALTHY,
  DF_SERVER_UNHEALTHY,      /* heartbeat older than its timeout */
} DfServerState;
const char *df_server_state_name (DfServerState s);
/* s's state at now_ms (unix ms). */
DfServerState df_server_state (const DfServer *s, gint64 now_ms);
/* The current time in unix ms (the one clock of the registry). */
gint64 df_farm_now_ms (void);

/* Fill or refresh the row named s->name (checks of server add; kind one
 * of the two above, and the row's own kind when it exists, else
 * DF_ERROR_EXISTS; s->timeout_ms 1 ms-24 h; s->software recorded):
 * address, ports and power become what the server says, its load is
 * reset and the registration counts as its first heartbeat. */
bool df_farm_server_register (DfFarm *farm, const DfServer *s,
                              GError **err);
/* Record a heartbeat of server name at now_ms with its load (the
 * versions_* counts come from its store state, not from load).
 * DF_ERROR_NOT_FOUND when the row is gone (removed by the admin: the
 * caller registers again). */
bool df_farm_server_heartbeat (DfFarm *farm, const char *name,
                               gint64 now_ms, const DfServerLoad *load,
                               GError **err);

/* ---- cache leases (leases.c) -------------------------------------------- */
/* Who may write a device's write cache (issue 13, DESIGN.md "A farm of many
 * servers").  A 'shared' cache lives on storage every server reaches: one
 * holder at a time, renewed every ttl/3 until expires_ms (unix ms, the
 * holder's clock; hosts keep NTP time and the margin covers their skew);
 * another server takes it only once now > expires_ms + margin, bumping the
 * epoch (the fencing token).  A 'local' cache (server, ram) lives on its
 * holder's disk for one boot generation: another server never serves that
 * generation (the device must reboot).  Telemetry-like: not audited. */
typedef enum {
  DF_LEASE_SHARED = 0,
  DF_LEASE_LOCAL,
} DfLeaseKind;

typedef struct {
  char *device;
  DfLeaseKind kind;
  char *holder;       /* server name */
  gint64 epoch;       /* > 0, grows with every new holder */
  gint64 generation;  /* the device's boot generation at acquisition;
                       * local: DF_LEASE_EVERY_GENERATION for a cache
                       * that outlives boots */
  gint64 expires_ms;  /* shared: renewed until; 0: released; local: 0 */
  gint64 acquired_ms;
} DfCacheLease;
void df_cache_lease_free (DfCacheLease *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfCacheLease, df_cache_lease_free)

/* Take device's shared lease for holder until now_ms + ttl_ms: free,
 * released, held by holder itself (a restart: new epoch), or lapsed
 * (now_ms > expires_ms + margin_ms: new epoch).  Otherwise
 * DF_ERROR_BUSY naming the holder.  *out: the lease now held (new). */
bool df_farm_lease_acquire (DfFarm *farm, const char *device,
                            const char *holder, gint64 generation,
                            gint64 now_ms, gint64 ttl_ms, gint64 margin_ms,
                            DfCacheLease **out, GError **err);
/* Extend holder's lease of epoch to now_ms + ttl_ms.  DF_ERROR_DENIED
 * when it is no longer holder's at that epoch (taken over); other codes
 * when the DB cannot say (offline: the caller's self-fence decides). */
bool df_farm_lease_renew (DfFarm *farm, const char *device,
                          const char *holder, gint64 epoch, gint64 now_ms,
                          gint64 ttl_ms, GError **err);
/* Give it up (expires_ms 0); a lease no longer holder's is left alone. */
bool df_farm_lease_release (DfFarm *farm, const char *device,
                            const char *holder, gint64 epoch, GError **err);
/* The generation a local claim gives for a cache that outlives boots
 * (server-persistent or private on a server's own disk): all of them. */
#define DF_LEASE_EVERY_GENERATION ((gint64) -1)
/* Record that holder's local disk holds device's cache of generation
 * (or of DF_LEASE_EVERY_GENERATION).  DF_ERROR_DENIED when another
 * server's local cache holds that very generation: it died with that
 * server (or lives on there) and must not be replaced by another under
 * the running OS. */
bool df_farm_lease_claim_local (DfFarm *farm, const char *device,
                                const char *holder, gint64 generation,
                                gint64 now_ms, GError **err);
/* The row of device, or NULL (err unset when there is none). */
DfCacheLease *df_farm_lease_get (DfFarm *farm, const char *device,
                                 GError **err);

/* ---- store state (registry.c) ------------------------------------------ */
/* What one server knows of its copy of one version file. */
typedef enum {
  DF_STORE_PRESENT = 0, /* file there, not (yet) hashed */
  DF_STORE_VERIFIED,    /* SHA-256 equals the version's */
  DF_STORE_MISSING,     /* no file */
  DF_STORE_CORRUPT,     /* SHA-256 differs, or unreadable */
} DfStoreState;
const char *df_store_state_name (DfStoreState s);

typedef struct {
  char *server;
  char *vdisk;
  int number;
  DfStoreState state;
  char *sha256;         /* what was computed, or NULL */
  gint64 checked_ms;
  char *detail;         /* why corrupt/missing, or NULL */
} DfStoreRecord;
void df_store_record_free (DfStoreRecord *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfStoreRecord, df_store_record_free)

/* Record (upsert) server's state of vdisk@number.  Not audited. */
bool df_farm_store_state_set (DfFarm *farm, const char *server,
                              const char *vdisk, int number,
                              DfStoreState state, const char *sha256,
                              const char *detail, GError **err);
/* Every record (of vdisk when not NULL), by vdisk, number, server (new
 * array of DfStoreRecord). */
GPtrArray *df_farm_store_state_list (DfFarm *farm, const char *vdisk,
                                     GError **err);
/* server's record of vdisk@number: NULL with *err unset when none. */
DfStoreRecord *df_farm_store_state_get (DfFarm *farm, const char *server,
                                        const char *vdisk, int number,
                                        GError **err);
/* The placement rule: may server serve vdisk@number?  While the farm has
 * no store-state record at all (a farm whose servers have no registry
 * name: one server, as before the registry) every server holds every
 * version.  Once any record exists, a server holds a version only with a
 * "verified" record of it and of every version it stacks on (an unsealed
 * maintenance version, which has no file yet, counts as its parent).
 * *holds receives the answer; NOT_FOUND for an unknown version. */
bool df_farm_store_holds (DfFarm *farm, const char *server, const char *vdisk,
                          int number, bool *holds, GError **err);
/* PVS's rule for `version list`: true while some healthy streamsvc of the
 * registry does not hold vdisk@number verified (false when the registry
 * has no healthy streamsvc: nothing to wait for). */
bool df_farm_version_replicating (DfFarm *farm, const char *vdisk,
                                  int number, bool *pending, GError **err);
/* Hash the file of version v in this farm directory's store and record
 * the result as server's store state: verified (the SHA-256 is v's),
 * corrupt (another hash, or unreadable), missing (no file).  A version
 * without a recorded SHA-256 (unsealed maintenance) is not checked:
 * *state PRESENT, nothing recorded.  *state (nullable) receives the
 * result; *detail (nullable) why it is not verified (new string or
 * NULL).  False only on a DB error. */
bool df_farm_store_verify (DfFarm *farm, const char *server,
                           const DfVersion *v, DfStoreState *state,
                           char **detail, GError **err);
