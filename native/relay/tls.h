// TLS for HBONE (tls.cc): contexts from PEM credentials, the peer's URI SANs, readable errors, and
// the write BIO that queues a session's TLS records for large send()s.
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <vector>

#include "byte_queue.h"

namespace weft::relay {

// TLS 1.3 only, with the given cipher suites (OpenSSL's list syntax).
SSL_CTX* NewContext(const std::string& key, const std::string& chain, const std::string& root, bool server,
                    const std::string& ciphers, std::string* err);
std::vector<std::string> PeerUris(SSL* ssl);
std::string TlsError(SSL* ssl, int ret);

// A BIO whose writes are appended to `out` (which must outlive it).
BIO* NewQueueBio(ByteQueue* out);

// The read side of a session's socket, as OpenSSL's socket BIO reads it, and whether the last
// read came back short: the kernel had nothing more then, so with level-triggered polling the
// session can stop reading without the extra read(2) that would only say EAGAIN.
struct SocketReader {
  int fd;
  bool drained = false;
  bool eof = false;
};
// A read BIO over `r` (which must outlive it).
BIO* NewSocketReadBio(SocketReader* r);

}  // namespace weft::relay
