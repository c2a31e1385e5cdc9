// One CONNECT tunnel on an HBONE session: an HTTP/2 stream and the plaintext socket it relays to.
// Bytes read from the socket wait in `up` until nghttp2 frames them (h2_callbacks.cc); DATA that
// arrives waits in `down` until the socket takes it, and only then is acknowledged to the peer
// (Session::Consume), so flow control runs end to end. The stream ends (`done`, once) when both its
// HTTP/2 side and its socket are closed. On a server the socket may first be connected here (Dial:
// JavaScript decided, the relay thread dials), answered once the connect is done. Its own file
// because its life differs from the session's: many per session, each with its socket's poll.
#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "byte_queue.h"

namespace weft::relay {

// Plaintext read, not yet framed, per stream: past it the socket is not read.
constexpr size_t kUpMax = 256 * 1024;

class Session;

struct Stream {
  Session* s;
  int32_t id = -1;      // the HTTP/2 stream id
  uint32_t handle = 0;  // what JavaScript calls it: its own number for client streams, the id on servers
  int fd = -1;  // the plaintext side; ours once attached
  // Client: the app's socket (a duplicate) handed over with the request, attached here when the 200
  // arrives and never read before. JavaScript keeps its own descriptor until then and may retry the
  // socket on another session, so on any other outcome this one is only closed (DropEarly): no
  // SO_LINGER, no shutdown, nothing the connection would see.
  int early_fd = -1;
  // Client: opened by the relay itself for a captured connection (express_out.h): the listener it
  // came in on. early_fd is then the app's only descriptor: reset when the tunnel fails (what the
  // app would see without a mesh), or handed back to JavaScript when the stream was refused unseen.
  uint32_t express_listener = 0;
  uv_poll_t* poll = nullptr;
  int events = 0;
  ByteQueue up;    // read from fd, not yet framed
  ByteQueue down;  // arrived on the stream, not yet written to fd
  bool attached = false, fd_eof = false, fd_shut = false, fd_closed = false;
  bool peer_end = false, h2_closed = false, done = false;
  uint64_t bytes_read = 0, bytes_written = 0;  // on the plaintext socket: `done`'s n1 and n2
  int status = 0;
  uint32_t rst = 0;
  std::string error;
  std::vector<std::string> headers;  // server: the request's, name/value flat
  size_t header_bytes = 0;           // server: the request's header list size (RFC 9113 §6.5.2)
  // Server: the upstream socket being connected here (Session::RespondDial), not yet answered; `fd`
  // and `poll` are the socket's, `target` (ADDR:PORT) names it in the error.
  bool connecting = false;
  uv_timer_t* connect_timer = nullptr;
  std::string target;

  ~Stream() { DropEarly(); }  // the last resort: every path that ends a stream drops it before

  void Attach(int plain_fd);
  void DropEarly();
  // Starts connecting `plain_fd` (ours from here on); the session hears the result (Session::Dialed),
  // possibly before this returns.
  void Dial(int plain_fd, const sockaddr_storage& addr, socklen_t len, uint64_t timeout_ms);
  void DialDone(int err);
  void StopConnect();
  void UpdatePoll();
  void ReadUp();
  void WriteDown();
  void FdFailed(int err);
  void CloseFd(bool reset);
  void MaybeFinish();
};

}  // namespace weft::relay
