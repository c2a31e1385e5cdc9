// weft_relay: HBONE (HTTP/2 CONNECT over mutual TLS 1.3) moved off the JavaScript heap and thread.
// Sessions, streams and the bytes they carry live on the relay thread's own libuv loop, so a relayed
// chunk never becomes a JS callback, a Buffer or a stream event, and a GC pause or a busy moment in
// JavaScript never stalls bytes in flight. JavaScript keeps every decision: which session to use,
// who may connect where, which socket to dial. It sends commands (Post) and hears about sessions and
// streams through one dispatch function (Emit), both through queues woken by uv_async.
//
// TLS is Node's own OpenSSL and HTTP/2 is Node's own nghttp2: the node binary exports both, so this
// addon links neither (headers: node's openssl, Debian's libnghttp2-dev).
//
// The parts: addon.cc (the JavaScript surface and the relay thread; this header's functions),
// session.{h,cc} (one HBONE connection), stream.{h,cc} (one CONNECT tunnel on it), h2_callbacks
// (nghttp2's callbacks into them), registry (live sessions by number, and what waits to be freed),
// tls (contexts, peer names, the BIO that queues TLS records), pipe (plaintext relays), listener
// (listening sockets accepted on the relay thread), byte_queue (every buffer), util (small socket
// and time helpers).
//
// This header: how the relay thread and the JavaScript thread talk, and when things may be freed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace weft::relay {

// What JavaScript hears: dispatch(type, session, stream, n1, n2, n3, text, list).
struct Event {
  const char* type;
  uint32_t session;
  int32_t stream = 0;
  double n1 = 0, n2 = 0, n3 = 0;
  std::string text;
  std::vector<std::string> list;
};
// From the relay thread: queued for the JavaScript thread, which hears it on its next loop turn.
void Emit(Event e);

// From the JavaScript thread: runs on the relay thread, in order.
void Post(std::function<void()> fn);

// The relay thread's loop.
uv_loop_t* Loop();

// A new client stream's number, from the same count as request()'s (any thread).
uint32_t NextStreamHandle();

// True once init() has started the relay thread: Post and Loop need it.
bool Started();

// Events queued for the JavaScript thread and not yet delivered: how far behind it is.
size_t QueuedEvents();

// Every relay-thread callback holds one; the outermost frees what closed meanwhile, so nothing is
// freed under OpenSSL, nghttp2 or a caller further up the stack.
class Entry {
 public:
  Entry();
  ~Entry();
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;
};

}  // namespace weft::relay
