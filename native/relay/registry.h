// The relay thread's registry (registry.cc): live sessions by number, the session and stream counts
// `stats()` reports, and the sessions, streams and pipes that ended and wait to be freed. Freed only
// by Reap, from the outermost Entry (relay.h): never under OpenSSL, nghttp2 or a caller that still
// holds a pointer. Relay thread only; the counts may be read from any thread.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "session.h"

namespace weft::relay {

Session* FindSession(uint32_t id);
void AddSession(uint32_t id, int fd, SSL_CTX* ctx, bool server, const std::string& identity, const Settings& cfg);
// A session that closed: out of the registry, freed at the next Reap.
void RetireSession(Session* s);
// A stream opened on some session, and one that ended (freed at the next Reap).
void CountStream();
void RetireStream(Stream* st);
void Reap();
size_t SessionCount();
size_t StreamCount();

}  // namespace weft::relay
