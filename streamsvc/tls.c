/* streamsvc: NBD TLS with OpenSSL (see tls.h). */
#define G_LOG_DOMAIN "streamsvc-tls"

#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define CA_CERT "ca-cert.pem"
#define SERVER_CERT "server-cert.pem"
#define SERVER_KEY "server-key.pem"

/* One key of the PSK file (wiped at free). */
typedef struct {
  size_t len;
  uint8_t key[DF_TLS_PSK_MAX];
} psk_key;

struct DfTls {
  DfTlsMode mode;
  SSL_CTX *ctx;          /* owned */
  GHashTable *file_keys; /* identity -> psk_key (owned, wiped) */
  bool x509;
  DfTlsPskLookup lookup;
  void *lookup_opaque;
};

struct DfTlsConn {
  DfTls *tls;       /* borrowed */
  SSL *ssl;         /* owned */
  char *client;     /* owned */
  char *psk_identity; /* owned: the identity whose key the handshake used */
  char *refused_identity; /* owned: an identity offered without a key */
  char *identity;   /* owned, after the handshake */
  bool want_write;
  bool up;          /* the handshake is done */
};

/* ---- errors ------------------------------------------------------------ */

/* The newest OpenSSL error of this thread as text, the queue emptied
 * (each worker's queue must not carry one connection's error into the
 * next).  New string. */
static char *
ssl_error_text (void)
{
  unsigned long e, last = 0;
  char buf[256];

  while ((e = ERR_get_error ()) != 0)
    last = e;
  if (last == 0)
    return g_strdup ("no OpenSSL error");
  ERR_error_string_n (last, buf, sizeof buf);
  return g_strdup (buf);
}

static void
set_ssl_error (GError **err, const char *what, const char *path)
{
  g_autofree char *why = ssl_error_text ();

  g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "%s %s: %s", what, path,
               why);
}

/* ---- the PSK file ------------------------------------------------------ */

static void
psk_key_free (gpointer p)
{
  df_secret_wipe (p, sizeof (psk_key));
  g_free (p);
}

static bool
parse_hex (const char *hex, size_t n, uint8_t *out)
{
  for (size_t i = 0; i < n; i += 2)
    {
      int hi = g_ascii_xdigit_value (hex[i]);
      int lo = g_ascii_xdigit_value (hex[i + 1]);
      if (hi < 0 || lo < 0)
        return false;
      out[i / 2] = (uint8_t) (hi << 4 | lo);
    }
  return true;
}

/* One "identity:hexkey" line into t->file_keys. */
static bool
psk_line (DfTls *t, const char *path, guint lineno, char *line, GError **err)
{
  char *colon = strchr (line, ':');
  size_t hexlen;
  psk_key *k;

  if (colon == NULL || colon == line)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s:%u: not an identity:hexkey line", path, lineno);
      return false;
    }
  *colon = '\0';
  hexlen = strlen (colon + 1);
  if (hexlen % 2 != 0 || hexlen / 2 < DF_TLS_PSK_MIN
      || hexlen / 2 > DF_TLS_PSK_MAX)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s:%u: the key of '%s' must be %u to %u bytes as an "
                   "even number of hex digits", path, lineno, line,
                   DF_TLS_PSK_MIN, DF_TLS_PSK_MAX);
      return false;
    }
  if (g_hash_table_contains (t->file_keys, line))
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s:%u: identity '%s' given twice", path, lineno, line);
      return false;
    }
  k = g_new0 (psk_key, 1);
  k->len = hexlen / 2;
  if (!parse_hex (colon + 1, hexlen, k->key))
    {
      psk_key_free (k);
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID,
                   "%s:%u: the key of '%s' is not hex", path, lineno, line);
      return false;
    }
  g_hash_table_insert (t->file_keys, g_strdup (line), k);
  return true;
}

static bool
load_psk_file (DfTls *t, const char *path, GError **err)
{
  g_autofree char *text = NULL;
  size_t len = 0;
  char *next;
  guint lineno = 0;
  bool ok = true;

  if (!g_file_get_contents (path, &text, &len, err))
    {
      g_prefix_error (err, "--tls-psk: ");
      return false;
    }
  /* each line ends at its \n; blank lines are skipped */
  for (char *p = text; ok && p != NULL; p = next)
    {
      char *nl = strchr (p, '\n');
      next = nl != NULL ? nl + 1 : NULL;
      if (nl != NULL)
        *nl = '\0';
      lineno++;
      g_strchomp (p);
      if (*p != '\0')
        ok = psk_line (t, path, lineno, p, err);
    }
  df_secret_wipe (text, len);
  if (ok && g_hash_table_size (t->file_keys) == 0)
    {
      g_set_error (err, DF_ERROR, DF_ERROR_INVALID, "%s: no key in it",
                   path);
      ok = false;
    }
  return ok;
}

/* ---- the OpenSSL context ----------------------------------------------- */

static bool
psk_find (DfTls *t, const char *identity, uint8_t *key, size_t *len)
{
  const psk_key *k = g_hash_table_lookup (t->file_keys, identity);

  if (k != NULL)
    {
      memcpy (key, k->key, k->len);
      *len = k->len;
      return true;
    }
  return t->lookup != NULL && t->lookup (t->lookup_opaque, identity, key, len);
}

/* OpenSSL's server PSK callback (TLS 1.2, and TLS 1.3 external PSKs with
 * SHA-256): the key of identity, or 0 (the handshake then fails, or
 * falls back to certificates). */
static unsigned int
psk_server_cb (SSL *ssl, const char *identity, unsigned char *psk,
               unsigned int max_psk_len)
{
  DfTlsConn *c = SSL_get_app_data (ssl);
  uint8_t key[DF_TLS_PSK_MAX];
  size_t len = 0;
  unsigned int rc = 0;

  if (identity == NULL || c == NULL)
    return 0;
  if (psk_find (c->tls, identity, key, &len) && len <= max_psk_len
      && len >= DF_TLS_PSK_MIN)
    {
      memcpy (psk, key, len);
      rc = (unsigned int) len;
      g_free (c->psk_identity);
      c->psk_identity = g_strdup (identity);
    }
  else
    {
      g_free (c->refused_identity);
      c->refused_identity = g_strdup (identity);
    }
  df_secret_wipe (key, sizeof key);
  return rc;
}

static bool
load_x509 (DfTls *t, const char *dir, bool verify_peer, GError **err)
{
  g_autofree char *ca = g_build_filename (dir, CA_CERT, NULL);
  g_autofree char *cert = g_build_filename (dir, SERVER_CERT, NULL);
  g_autofree char *key = g_build_filename (dir, SERVER_KEY, NULL);
  STACK_OF (X509_NAME) *names;

  if (SSL_CTX_use_certificate_chain_file (t->ctx, cert) != 1)
    {
      set_ssl_error (err, "server certificate", cert);
      return false;
    }
  if (SSL_CTX_use_PrivateKey_file (t->ctx, key, SSL_FILETYPE_PEM) != 1
      || SSL_CTX_check_private_key (t->ctx) != 1)
    {
      set_ssl_error (err, "server key", key);
      return false;
    }
  if (SSL_CTX_load_verify_locations (t->ctx, ca, NULL) != 1
      || (names = SSL_load_client_CA_file (ca)) == NULL)
    {
      set_ssl_error (err, "CA certificate", ca);
      return false;
    }
  SSL_CTX_set_client_CA_list (t->ctx, names);
  /* A client certificate, when sent, must chain to the CA; required with
   * verify_peer.  Its CN is the identity. */
  SSL_CTX_set_verify (t->ctx, SSL_VERIFY_PEER
                      | (verify_peer ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                      NULL);
  t->x509 = true;
  return true;
}

static bool
make_ctx (DfTls *t, GError **err)
{
  t->ctx = SSL_CTX_new (TLS_server_method ());
  if (t->ctx == NULL)
    {
      set_ssl_error (err, "TLS", "context");
      return false;
    }
  SSL_CTX_set_min_proto_version (t->ctx, TLS1_2_VERSION);
  /* Each session authenticates in full: no resumption that would carry
   * an identity past a key's removal. */
  SSL_CTX_set_options (t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
  /* a client that closes without close_notify just ended (NBD has its own
   * end: NBD_CMD_DISC) */
  SSL_CTX_set_options (t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_session_cache_mode (t->ctx, SSL_SESS_CACHE_OFF);
  /* still required by a handshake that verifies a client certificate */
  SSL_CTX_set_session_id_context (t->ctx, (const unsigned char *) "nbd", 3);
  SSL_CTX_set_num_tickets (t->ctx, 0);
  /* The engine's output buffer moves as it grows, and a socket takes
   * part of it at a time. */
  SSL_CTX_set_mode (t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                    | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_set_cipher_list (t->ctx, "HIGH:!aNULL:!MD5:!RC4") != 1)
    {
      set_ssl_error (err, "TLS", "cipher list");
      return false;
    }
  /* TLS 1.3: a PSK of the old-style callback is a SHA-256 one, usable
   * only when the suite chosen hashes with SHA-256 too. */
  if (SSL_CTX_set_ciphersuites (t->ctx, "TLS_AES_128_GCM_SHA256:"
                                "TLS_CHACHA20_POLY1305_SHA256:"
                                "TLS_AES_256_GCM_SHA384") != 1)
    {
      set_ssl_error (err, "TLS", "cipher suites");
      return false;
    }
  SSL_CTX_set_options (t->ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_psk_server_callback (t->ctx, psk_server_cb);
  return true;
}

DfTls *
df_tls_new (const DfTlsConfig *cfg, GError **err)
{
  g_autoptr (DfTls) t = g_new0 (DfTls, 1);

  g_return_val_if_fail (cfg->mode != DF_TLS_OFF, NULL);
  t->mode = cfg->mode;
  t->lookup = cfg->lookup;
  t->lookup_opaque = cfg->lookup_opaque;
  t->file_keys = g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                        psk_key_free);
  if (!make_ctx (t, err))
    return NULL;
  if (cfg->certificates != NULL
      && !load_x509 (t, cfg->certificates, cfg->verify_peer, err))
    return NULL;
  if (cfg->psk_file != NULL && !load_psk_file (t, cfg->psk_file, err))
    return NULL;
  return g_steal_pointer (&t);
}

void
df_tls_free (DfTls *t)
{
  if (t == NULL)
    return;
  if (t->ctx != NULL)
    SSL_CTX_free (t->ctx);
  if (t->file_keys != NULL)
    g_hash_table_unref (t->file_keys);
  g_free (t);
}

DfTlsMode
df_tls_mode (const DfTls *t)
{
  return t->mode;
}

const char *
df_tls_kinds (const DfTls *t)
{
  bool psk = t->lookup != NULL || g_hash_table_size (t->file_keys) > 0;

  return t->x509 && psk ? "x509+psk" : t->x509 ? "x509" : "psk";
}

/* ---- one connection ------------------------------------------------------ */

DfTlsConn *
df_tls_conn_new (DfTls *t, int fd, const char *client)
{
  DfTlsConn *c = g_new0 (DfTlsConn, 1);

  c->tls = t;
  c->client = g_strdup (client);
  c->ssl = SSL_new (t->ctx);
  if (c->ssl != NULL)
    {
      SSL_set_app_data (c->ssl, c);
      SSL_set_fd (c->ssl, fd);
      SSL_set_accept_state (c->ssl);
    }
  return c;
}

void
df_tls_conn_free (DfTlsConn *c)
{
  if (c == NULL)
    return;
  if (c->ssl != NULL)
    {
      if (c->up)
        {
          SSL_shutdown (c->ssl); /* close_notify, once, not waited for */
          ERR_clear_error ();
        }
      SSL_free (c->ssl);
    }
  g_free (c->client);
  g_free (c->psk_identity);
  g_free (c->refused_identity);
  g_free (c->identity);
  g_free (c);
}

/* The verified client certificate's CN (new string), or NULL. */
static char *
peer_cn (SSL *ssl)
{
  X509 *cert = SSL_get0_peer_certificate (ssl);
  X509_NAME *name;
  int i;
  unsigned char *utf8 = NULL;
  int n;
  char *cn = NULL;

  if (cert == NULL || SSL_get_verify_result (ssl) != X509_V_OK)
    return NULL;
  name = X509_get_subject_name (cert);
  i = X509_NAME_get_index_by_NID (name, NID_commonName, -1);
  if (i < 0)
    return NULL;
  n = ASN1_STRING_to_UTF8 (&utf8, X509_NAME_ENTRY_get_data (
                                      X509_NAME_get_entry (name, i)));
  if (n > 0 && memchr (utf8, '\0', (size_t) n) == NULL)
    cn = g_strndup ((const char *) utf8, (gsize) n);
  OPENSSL_free (utf8);
  return cn;
}

static void
handshake_failed (DfTlsConn *c, int rc)
{
  int e = SSL_get_error (c->ssl, rc);
  g_autofree char *why = e == SSL_ERROR_SSL ? ssl_error_text ()
                         : e == SSL_ERROR_SYSCALL && errno != 0
                             ? g_strdup (g_strerror (errno))
                             : g_strdup ("the client closed the connection");

  ERR_clear_error ();
  if (c->refused_identity != NULL)
    g_message ("nbd %s: TLS handshake failed: %s (PSK identity '%s' has no "
               "key)", c->client, why, c->refused_identity);
  else
    g_message ("nbd %s: TLS handshake failed: %s", c->client, why);
}

DfTlsStep
df_tls_conn_handshake (DfTlsConn *c)
{
  int rc, e;

  if (c->ssl == NULL)
    {
      g_autofree char *why = ssl_error_text ();
      g_message ("nbd %s: TLS: %s", c->client, why);
      return DF_TLS_FAILED;
    }
  ERR_clear_error ();
  errno = 0;
  rc = SSL_do_handshake (c->ssl);
  if (rc == 1)
    {
      c->want_write = false;
      c->up = true;
      c->identity = c->psk_identity != NULL ? g_strdup (c->psk_identity)
                                            : peer_cn (c->ssl);
      g_message ("nbd %s: TLS %s established (%s, identity %s)", c->client,
                 SSL_get_version (c->ssl),
                 c->psk_identity != NULL ? "PSK" : "x509",
                 c->identity != NULL ? c->identity : "none");
      return DF_TLS_DONE;
    }
  e = SSL_get_error (c->ssl, rc);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    {
      c->want_write = e == SSL_ERROR_WANT_WRITE;
      return DF_TLS_AGAIN;
    }
  handshake_failed (c, rc);
  return DF_TLS_FAILED;
}

bool
df_tls_conn_want_write (const DfTlsConn *c)
{
  return c->want_write;
}

const char *
df_tls_conn_identity (const DfTlsConn *c)
{
  return c->identity;
}

/* After a failed SSL_read/SSL_write: 0 = try again later, -1 = ended. */
static gssize
io_error (DfTlsConn *c, int rc, const char *what)
{
  int e = SSL_get_error (c->ssl, rc);
  g_autofree char *why = NULL;

  switch (e)
    {
    case SSL_ERROR_WANT_READ:
      c->want_write = false;
      return 0;
    case SSL_ERROR_WANT_WRITE:
      c->want_write = true;
      return 0;
    case SSL_ERROR_ZERO_RETURN:
      return -1; /* close_notify: a clean end */
    case SSL_ERROR_SYSCALL:
      if (errno == EAGAIN || errno == EINTR)
        return 0;
      if (errno != 0)
        g_debug ("nbd %s: TLS %s: %s", c->client, what, g_strerror (errno));
      ERR_clear_error ();
      return -1;
    default:
      why = ssl_error_text ();
      g_message ("nbd %s: TLS %s: %s", c->client, what, why);
      return -1;
    }
}

gssize
df_tls_conn_read (DfTlsConn *c, uint8_t *buf, size_t len)
{
  int rc;

  ERR_clear_error ();
  errno = 0;
  rc = SSL_read (c->ssl, buf, (int) MIN (len, (size_t) INT_MAX));
  if (rc > 0)
    {
      c->want_write = false;
      return rc;
    }
  return io_error (c, rc, "read");
}

bool
df_tls_conn_pending (const DfTlsConn *c)
{
  return SSL_pending (c->ssl) > 0;
}

gssize
df_tls_conn_write (DfTlsConn *c, const uint8_t *buf, size_t len)
{
  int rc;

  ERR_clear_error ();
  errno = 0;
  rc = SSL_write (c->ssl, buf, (int) MIN (len, (size_t) INT_MAX));
  if (rc > 0)
    {
      c->want_write = false;
      return rc;
    }
  return io_error (c, rc, "write");
}
