// One HBONE connection (session.cc): a TCP socket, its TLS, its HTTP/2 session and the CONNECT
// streams on it, driven by uv_poll on the relay thread's loop, as a client (streams JavaScript
// requests) or a server (streams the peer requests, answered by JavaScript). Commands from JavaScript
// arrive as calls on it (addon.cc, through the registry); nghttp2 calls back into it
// (h2_callbacks.cc); its streams are in stream.h.
#pragma once

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "byte_queue.h"
#include "express.h"
#include "stream.h"
#include "tls.h"

namespace weft::relay {

// A session's output caps: past kOutMax nghttp2 is told to wait (WOULDBLOCK, h2_callbacks.cc); past
// kTlsOutMax nothing more goes to SSL_write until the socket has taken some.
constexpr size_t kOutMax = 256 * 1024;     // framed, not yet taken by SSL_write, per session
constexpr size_t kTlsOutMax = 512 * 1024;  // encrypted, not yet taken by the socket, per session

// A session's HTTP/2 and keepalive numbers. They have no defaults here: JavaScript's settings
// (src/hbone/settings.ts, through relaySettings in src/hbone/native/addon.ts) are their one source,
// so both data paths and both ends of a tunnel agree; the addon refuses a session without all of them.
struct Settings {
  uint32_t stream_window;       // SETTINGS_INITIAL_WINDOW_SIZE
  uint32_t connection_window;   // the connection's receive window
  uint32_t max_frame;           // SETTINGS_MAX_FRAME_SIZE
  uint32_t max_streams;         // server: SETTINGS_MAX_CONCURRENT_STREAMS
  // A request's header list (RFC 9113 §6.5.2: name + value + 32 per field), advertised as
  // SETTINGS_MAX_HEADER_LIST_SIZE and enforced here (nghttp2 only advertises it); past it a request
  // is answered 431.
  uint32_t max_header_list;
  uint64_t ping_interval_ms;    // a PING after this long without a frame from the peer
  uint64_t ping_timeout_ms;     // closed after this long without one
  uint64_t connect_timeout_ms;  // TLS and HTTP/2 settings must be done by then
};

void FlushSessions();

class Session {
 public:
  Session(uint32_t id, int fd, SSL_CTX* ctx, bool server, std::string identity, const Settings& cfg);
  ~Session();

  const uint32_t id;
  const bool server;
  bool dead() const { return state_ == kClosed; }

  // TLS, then HTTP/2; driven by the socket from here on.
  void Handshake();

  // Commands from JavaScript. A file descriptor passed in is ours from then on, used or closed.
  // early_fd (-1: none) is the app's socket, attached on 200 (Stream::early_fd); closed otherwise.
  void Request(uint32_t handle, const std::vector<std::string>& headers, int early_fd);
  void Respond(uint32_t stream, int status, int fd);
  // Connects fd to addr, then answers 200 and relays (or 503 and closes fd); `target` names it.
  void RespondDial(uint32_t stream, int fd, const sockaddr_storage& addr, socklen_t len, const std::string& target,
                   uint64_t timeout_ms);
  // Client: a CONNECT the relay opens itself for a captured connection (express_out.h), with
  // app_fd as its early socket and headers as Request's. Nothing if the session would not take it
  // (closing, a GOAWAY seen, max_streams open): app_fd is then untouched. Not yet flushed: the
  // caller emits `xout` first, then calls Flush(), so JavaScript hears of it before its `done`.
  Stream* RequestOut(uint32_t handle, const std::vector<std::string>& headers, int app_fd, uint32_t max_streams,
                     uint32_t listener);
  void Attach(uint32_t handle, int fd);
  void Cancel(uint32_t handle);
  // Server: the pod whose supply express dials use (express.h); 0, none.
  void SetExpressPod(uint32_t pod) { express_pod_ = pod; }
  // Another dial socket of `family` from this session's pod supply, or -1 (express.h ExpressSpare).
  int SpareDialFd(int family);
  // Server: a later CONNECT to `authority` on this session may be dialled as `g` says (express.h).
  void Grant(const std::string& authority, const ExpressGrant& g);
  void Close(bool graceful);

  // From streams and nghttp2. Flush asks for what nghttp2 has queued to be sent once this turn of
  // the loop has handled its events (FlushSessions); FlushNow sends it at once.
  void Flush();
  void FlushNow();
  void Consume(Stream* st, size_t n);
  void Fail(const char* kind, const std::string& reason);
  Stream* Find(int32_t id);
  Stream* ByHandle(uint32_t handle);
  void Finished(Stream* st);
  void Dialed(Stream* st, int err);  // a stream's connect ended: 0, or why it failed
  void DialEnded() { dials_connecting_--; }
  nghttp2_session* h2() { return h2_; }
  ByteQueue& out() { return out_; }
  bool OnFrame(const nghttp2_frame* f);
  void OnFrameSent(const nghttp2_frame* f);
  void OnStreamClose(int32_t id, uint32_t code);
  void OnHeader(int32_t id, const nghttp2_nv& nv);
  void OnBeginHeaders(int32_t id);
  void OnData(int32_t id, const uint8_t* data, size_t len);

 private:
  enum State { kHandshake, kOpen, kClosed };
  void OnTcp(int status, int events);
  static void OnTick(uv_timer_t* t);  // the timer's callback
  void OnTimer();
  void Established();
  void ReadTls();
  void ReadOn();  // reads on in a later turn of the loop: this wake-up's budget is spent
  void SetTcpEvents(int ev);
  bool SendTls();
  void WriteDirty();
  void Announce();
  Stream* Submit(uint32_t handle, const std::vector<std::string>& headers, int early_fd);  // nullptr: nghttp2 refused
  bool TryExpress(Stream* st);  // dialled here on a grant: JavaScript hears `xopen`
  bool Answerable(const Stream* st) const;
  void Answer(Stream* st, int status);
  void Terminate(const char* kind, const std::string& reason, bool graceful);
  void StartDrain();
  void FinishDrain();

  State state_ = kHandshake;
  int fd_;
  SocketReader reader_;  // our read BIO's state: was the socket's last read short?
  SSL* ssl_;
  uv_poll_t* poll_;
  uv_timer_t* timer_;
  int events_ = 0;
  nghttp2_session* h2_ = nullptr;
  std::string identity_;  // client: the server's SPIFFE URI; server: the trust domain
  Settings cfg_;
  ByteQueue out_;      // HTTP/2 frames for SSL_write
  ByteQueue tls_out_;  // TLS records for the socket (our write BIO)
  std::vector<Stream*> dirty_;  // streams with received data to write out after this read
  std::vector<int32_t> new_streams_;  // server: requests to tell JavaScript about after this read
  bool write_blocked_ = false, ready_ = false, closing_ = false;
  bool read_on_ = false;  // waiting in ReadOn's list
  bool flush_pending_ = false;  // waiting in Flush's list
  friend void FlushSessions();
  // A server's graceful close (RFC 9113 §6.8), in two GOAWAYs: kPending, asked during the handshake
  // (drained once open); kNotice, the shutdown notice (last stream 2^31-1) and a PING queued; kProbe,
  // the notice and the PING are out, waiting for the ACK (or the timer); kFinal, the GOAWAY naming
  // the last stream processed is queued.
  enum Drain { kNone, kPending, kNotice, kProbe, kFinal };
  Drain drain_ = kNone;
  uint64_t started_, last_recv_, last_ping_ = 0;
  std::string peer_;
  std::unordered_map<int32_t, Stream*> streams_;
  std::unordered_map<uint32_t, Stream*> handles_;  // client streams, by JavaScript's number
  // Server: streams connecting their upstream now, and RespondDial commands received in all. Each
  // `stream` event carries both, so JavaScript can count this session's dials in flight (its cap)
  // without an event per connect: those it sent since, minus none that finished meanwhile.
  uint32_t dials_connecting_ = 0;
  double dials_received_ = 0;
  uint32_t express_pod_ = 0;
  std::unordered_map<std::string, ExpressGrant> grants_;  // by raw :authority
};

// Relay thread, before and after each poll: sends what the sessions that called Flush have queued.
// One write per session per turn of the loop: the frames of every stream that moved in that turn
// share TLS records and TCP segments, where a write each cost a record, a segment and the peer's
// wake-up each.
void FlushSessions();

}  // namespace weft::relay
