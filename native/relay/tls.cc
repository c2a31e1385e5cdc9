// TLS for HBONE (tls.h): contexts from the PEM credentials JavaScript holds (key, chain leaf first,
// mesh root), TLS 1.3 with the cipher suites settings.ts names (AES-GCM only, as ztunnel) and ALPN
// h2, peer certificates always required and verified against the mesh root. Peers are named by their
// URI SANs, never by hostname. And the write BIO sessions use, so their TLS records leave in large
// send()s.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstring>
#include <unistd.h>

#include "tls.h"

namespace weft::relay {
namespace {

const unsigned char kAlpn[] = {2, 'h', '2'};

int SelectAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
               void*) {
  unsigned char* sel = nullptr;
  if (SSL_select_next_proto(&sel, outlen, kAlpn, sizeof(kAlpn), in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

std::string LastError(const char* what) {
  unsigned long e = ERR_peek_last_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return std::string(what) + (e ? std::string(": ") + buf : "");
}

// The write side of every session's TLS: records are appended to the session's queue and leave
// in large send()s, not one write(2) per 16 KiB record as OpenSSL's socket BIO does.
BIO_METHOD* QueueBio() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* b = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "weft-queue");
    BIO_meth_set_write(b, [](BIO* bio, const char* data, int len) {
      static_cast<ByteQueue*>(BIO_get_data(bio))->append(reinterpret_cast<const uint8_t*>(data),
                                                         static_cast<size_t>(len));
      return len;
    });
    BIO_meth_set_ctrl(b, [](BIO*, int cmd, long, void*) -> long { return cmd == BIO_CTRL_FLUSH ? 1 : 0; });
    BIO_meth_set_create(b, [](BIO* bio) {
      BIO_set_init(bio, 1);
      return 1;
    });
    return b;
  }();
  return m;
}

// What BIO_new_socket's reads do (EAGAIN and EINTR are a retry, 0 is the end), plus the record
// of a short read that SocketReader keeps.
BIO_METHOD* SocketReadBio() {
  static BIO_METHOD* m = [] {
    BIO_METHOD* b = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "weft-socket-read");
    BIO_meth_set_read(b, [](BIO* bio, char* data, int len) -> int {
      auto* r = static_cast<SocketReader*>(BIO_get_data(bio));
      BIO_clear_retry_flags(bio);
      ssize_t n = ::read(r->fd, data, static_cast<size_t>(len));
      if (n > 0) {
        r->drained = n < len;
      } else if (n == 0) {
        r->eof = true;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        r->drained = true;
        BIO_set_retry_read(bio);
      }
      return static_cast<int>(n);
    });
    BIO_meth_set_ctrl(b, [](BIO* bio, int cmd, long, void*) -> long {
      if (cmd == BIO_CTRL_FLUSH) return 1;
      if (cmd == BIO_CTRL_EOF) return static_cast<SocketReader*>(BIO_get_data(bio))->eof ? 1 : 0;
      return 0;
    });
    BIO_meth_set_create(b, [](BIO* bio) {
      BIO_set_init(bio, 1);
      return 1;
    });
    return b;
  }();
  return m;
}

}  // namespace

BIO* NewSocketReadBio(SocketReader* r) {
  BIO* b = BIO_new(SocketReadBio());
  BIO_set_data(b, r);
  return b;
}

BIO* NewQueueBio(ByteQueue* out) {
  BIO* b = BIO_new(QueueBio());
  BIO_set_data(b, out);
  return b;
}

SSL_CTX* NewContext(const std::string& key, const std::string& chain, const std::string& root, bool server,
                    const std::string& ciphers, std::string* err) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) return *err = LastError("SSL_CTX_new"), nullptr;
  auto fail = [&](const char* what) {
    *err = LastError(what);
    SSL_CTX_free(ctx);
    return nullptr;
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  if (SSL_CTX_set_ciphersuites(ctx, ciphers.c_str()) != 1) return fail("ciphersuites");
  // Partial writes and a moving buffer: the pending output queue grows while a write waits.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  // Read whole socket buffers, not a record header and then its body: half the read syscalls.
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  if (server) {
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_alpn_select_cb(ctx, SelectAlpn, nullptr);
  } else if (SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn)) != 0) {
    return fail("alpn");
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);

  BIO* kb = BIO_new_mem_buf(key.data(), static_cast<int>(key.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  if (!pkey) return fail("private key");
  int ok = SSL_CTX_use_PrivateKey(ctx, pkey);
  EVP_PKEY_free(pkey);
  if (ok != 1) return fail("private key");

  BIO* cb = BIO_new_mem_buf(chain.data(), static_cast<int>(chain.size()));
  X509* leaf = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  if (!leaf) return BIO_free(cb), fail("certificate chain");
  ok = SSL_CTX_use_certificate(ctx, leaf);
  X509_free(leaf);
  while (ok == 1) {
    X509* extra = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
    if (!extra) break;
    ok = SSL_CTX_add0_chain_cert(ctx, extra);
    if (ok != 1) X509_free(extra);
  }
  BIO_free(cb);
  ERR_clear_error();  // the loop ends on "no start line"
  if (ok != 1) return fail("certificate chain");
  if (SSL_CTX_check_private_key(ctx) != 1) return fail("key does not match the certificate");

  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  BIO* rb = BIO_new_mem_buf(root.data(), static_cast<int>(root.size()));
  int roots = 0;
  while (X509* r = PEM_read_bio_X509(rb, nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store, r);
    X509_free(r);
    roots++;
  }
  BIO_free(rb);
  ERR_clear_error();
  if (roots == 0) return fail("root certificate");
  return ctx;
}

std::vector<std::string> PeerUris(SSL* ssl) {
  std::vector<std::string> uris;
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return uris;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI) continue;
    const ASN1_IA5STRING* s = n->d.uniformResourceIdentifier;
    uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
  }
  GENERAL_NAMES_free(names);
  X509_free(cert);
  return uris;
}

std::string TlsError(SSL* ssl, int ret) {
  int e = SSL_get_error(ssl, ret);
  long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK) return std::string("certificate verify failed: ") + X509_verify_cert_error_string(v);
  unsigned long q = ERR_peek_last_error();
  if (q) {
    char buf[256];
    ERR_error_string_n(q, buf, sizeof(buf));
    ERR_clear_error();
    return buf;
  }
  if (e == SSL_ERROR_ZERO_RETURN) return "peer closed the connection";
  if (e == SSL_ERROR_SYSCALL) {
    if (errno == 0) return "peer closed the connection";
    const char* name = strerrorname_np(errno);
    return name ? name : strerror(errno);
  }
  return "TLS error " + std::to_string(e);
}

}  // namespace weft::relay
