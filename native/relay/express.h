// Inbound decisions reused on the relay thread (express.cc). JavaScript decides every CONNECT the
// first time; when it allows one and dials, it may also grant the session that same answer for the
// same :authority (Session::Grant) until the mesh state changes. A later CONNECT that matches is
// then dialled here at once, with an unconnected socket JavaScript made in the pod's netns ahead of
// time (the pod's supply), and JavaScript hears of it after the fact (`xopen`, then `done` as for
// any stream), for metrics and the access log. Nothing waits for a JavaScript turn on that path.
//
// What keeps it exact: a grant names the generation of the state its decision read, and any state
// change moves the generation on, so older grants stop matching; a grant belongs to one session,
// whose peer identity and address do not change; the raw :authority must match byte for byte; the
// dial cap, a draining session, an empty supply or a pod gone all fall back to JavaScript.
#pragma once

#include <napi.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace weft::relay {

// A reusable decision: dial `addr` (`target` names it in errors); `tag` is JavaScript's record of
// the decision, carried by `xopen`.
struct ExpressGrant {
  uint64_t generation = 0;
  uint32_t tag = 0;
  sockaddr_storage addr{};
  socklen_t len = 0;
  std::string target;
};

// Grants a session keeps at most: each took an allowed decision to make, and a peer asking for more
// destinations than this goes through JavaScript for the rest.
constexpr size_t kMaxGrantsPerSession = 256;

// Relay thread. The socket to dial for `g` on pod `pod`'s behalf, or -1 (no such pod, an old
// generation, `connecting` at the pod's dial cap, or no socket of that family left: JavaScript
// decides instead). *timeout_ms is the pod's dial deadline.
int ExpressTake(uint32_t pod, const ExpressGrant& g, uint32_t connecting, uint64_t* timeout_ms);

// Relay thread. Another socket of `family` (AF_INET or AF_INET6) from pod `pod`'s supply, for a
// dial whose first socket could not connect (Stream::Dial), or -1.
int ExpressSpare(uint32_t pod, int family);

// Unconnected sockets held for all pods: part of the agent's ready dial sockets.
size_t ExpressFds();

// Relay thread: the state generation grants must name to match (expressGeneration).
uint64_t ExpressGenerationNow();

// Adds expressPod, expressSupply, expressRelease, expressGeneration and grant to the exports.
void RegisterExpress(Napi::Env env, Napi::Object exports);

// A JavaScript argument that must be a whole number from lo to hi; throws a TypeError naming `what`.
double WholeNumber(const Napi::Value& v, const char* what, double lo, double hi);

// Parses an IP literal and port into addr; false if it is neither IPv4 nor IPv6.
bool ParseSockaddr(const std::string& address, uint16_t port, sockaddr_storage* addr, socklen_t* len);

}  // namespace weft::relay
