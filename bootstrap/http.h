/* diskfarm bootstrap: HTTP (libsoup) for iPXE.
 *
 *   GET /boot.ipxe?mac=MAC[&uuid=UUID][&token=T]
 *        the device's boot script.  With a valid one-time token from the
 *        ProxyDHCP answer (boottoken.h): CHAP credentials in the script, a
 *        new boot generation, auto-add of an unknown MAC (rate-limited).
 *        Without one: no secret, no new generation, no auto-add.
 *   GET /<file>                         a file below <farm>/boot/ (Range
 *                                       handled by libsoup on full bodies)
 */
#pragma once

#include "boottoken.h"
#include "farm.h"
#include "health.h"

#include <glib.h>
#include <stdbool.h>

typedef struct DfBootHttp DfBootHttp;

/* Seconds a connection may wait for the client (idle keep-alive, slow
 * request, unread response) before it is closed. */
#define DF_BOOT_HTTP_IDLE_S 10
/* Auto-add limits: per client address and for all clients, per minute. */
#define DF_AUTO_ADD_PER_SOURCE 10
#define DF_AUTO_ADD_TOTAL 60

/* farm, health and tokens are borrowed and must outlive the server
 * (tokens nullable: then no fetch is trusted with secrets).  address is
 * this server's address, written into scripts. */
DfBootHttp *df_boot_http_new (DfFarm *farm, DfHealth *health,
                              DfBootTokens *tokens, const char *boot_dir,
                              const char *address, GError **err);
/* Listen on host:port (port 0: any; *bound_port receives it). */
bool df_boot_http_listen (DfBootHttp *h, const char *host, guint16 port,
                          guint16 *bound_port, GError **err);
void df_boot_http_free (DfBootHttp *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (DfBootHttp, df_boot_http_free)
