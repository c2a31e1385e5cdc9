// Outbound decisions reused on the relay thread (express_out.cc), the source side of express.h.
// JavaScript decides every captured connection to a destination the first time; once its CONNECT
// has been answered 200 it may grant that decision to the listener the connection came in on: a
// later connection from the same pod to the same original destination is opened at once on the
// same pooled HBONE session, with the same :authority and headers, by the relay thread itself. It
// finds the original destination in the capture's BPF map as JavaScript would, and JavaScript hears
// of the connection afterwards (`xout`, then the stream's `response` and `done`) for its record,
// metrics and access log.
//
// What keeps it exact: a grant names the generation of the state its decision read (expressGeneration),
// and any state change moves it on; a grant is only made for a decision with one possible outcome
// (a Service with several endpoints is load-balanced by JavaScript, never granted); the session
// must still take streams (open, no GOAWAY seen, under the pool's stream cap), else JavaScript
// decides. A stream the peer refuses unprocessed hands the app's socket back to JavaScript.
#pragma once

#include <napi.h>
#include <sys/socket.h>

#include <cstdint>

#include "relay.h"

namespace weft::relay {

// Grants one listener keeps at most: a pod talking to more destinations than this goes through
// JavaScript for the rest.
constexpr size_t kMaxOutGrants = 1024;

// Relay thread, for each connection `fd` accepted on `listener` from `peer`. True: the relay opened
// its CONNECT and `xout` is emitted (the fd is the relay's). False: the fd is still JavaScript's to
// decide; when the original destination was found (and so taken out of the map), it is in
// accept->list as [address, port].
bool ExpressOutbound(uint32_t listener, int fd, const sockaddr_storage& peer, Event* accept);

// Relay thread: the listener stopped; its grants go.
void ForgetOutbound(uint32_t listener);

// Adds outboundMap, outboundExpress and outGrant to the exports.
void RegisterExpressOut(Napi::Env env, Napi::Object exports);

}  // namespace weft::relay
