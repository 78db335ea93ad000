/* diskfarm bootstrap: HTTP (libsoup) for iPXE.
 *
 *   GET /boot.ipxe?mac=MAC[&uuid=UUID]  the device's boot script; starts a
 *                                       new boot generation
 *   GET /<file>                         a file below <farm>/boot/ (Range
 *                                       handled by libsoup on full bodies)
 */
#pragma once

#include "farm.h"
#include "health.h"

#include <glib.h>
#include <stdbool.h>

typedef struct DfBootHttp DfBootHttp;

/* farm and health are borrowed and must outlive the server.  address is
 * this server's address, written into scripts. */
DfBootHttp *df_boot_http_new (DfFarm *farm, DfHealth *health,
                              const char *boot_dir, const char *address,
                              GError **err);
/* Listen on host:port (port 0: any; *bound_port receives it). */
bool df_boot_http_listen (DfBootHttp *h, const char *host, guint16 port,
                          guint16 *bound_port, GError **err);
void df_boot_http_free (DfBootHttp *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfBootHttp, df_boot_http_free)
