// weft_relay: HBONE (HTTP/2 CONNECT over mutual TLS 1.3) moved off the JavaScript heap and thread.
// Sessions, streams and the bytes they carry live on the relay thread's own libuv loop, so a relayed
// chunk never becomes a JS callback, a Buffer or a stream event, and a GC pause or a busy moment in
// JavaScript never stalls bytes in flight. JavaScript keeps every decision: which session to use,
// who may connect where, which socket to dial. It sends commands (Post) and hears about sessions and
// streams through one dispatch function (Emit), both through queues woken by uv_async.
//
// TLS is Node's own OpenSSL and HTTP/2 is Node's own nghttp2: the node binary exports both, so this
// addon links neither (headers: node's openssl, Debian's libnghttp2-dev).
#pragma once

#include <napi.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <uv.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sys/types.h>
#include <string>
#include <unordered_map>
#include <vector>

namespace weft::relay {

// A byte queue of 64 KiB blocks from a process-wide free list: no realloc or memmove as it grows,
// no malloc(3) large enough to become mmap(2) (the agent caps glibc's mmap threshold), and no
// memory held while empty, so idle streams cost nothing.
constexpr size_t kBlock = 64 * 1024;

class ByteQueue {
 public:
  ByteQueue() = default;
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;
  ~ByteQueue() { consume(size_); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // The first contiguous piece.
  const uint8_t* front() const { return blocks_.front().p + blocks_.front().head; }
  size_t front_len() const { return blocks_.front().tail - blocks_.front().head; }
  void consume(size_t n);
  // Room at the tail (a fresh block when the last is full); commit() what was filled.
  uint8_t* tail(size_t* room);
  void commit(size_t n) {
    blocks_.back().tail += n;
    size_ += n;
  }
  void append(const uint8_t* p, size_t n);
  // Moves n bytes from this queue's front to dst's tail.
  void move_to(ByteQueue& dst, size_t n);
  // Sends from the front with one sendmsg(2); what send returns.
  ssize_t send_to(int fd) const;

 private:
  struct Block {
    uint8_t* p;
    size_t head, tail;
  };
  std::vector<Block> blocks_;
  size_t size_ = 0;
};

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

// Every relay-thread callback holds one; the outermost frees what closed meanwhile, so nothing is
// freed under OpenSSL, nghttp2 or a caller further up the stack.
class Entry {
 public:
  Entry();
  ~Entry();
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;
};

struct Settings {
  uint32_t stream_window = 4 << 20;
  uint32_t connection_window = 16 << 20;
  uint32_t max_frame = 1 << 20;
  uint32_t max_streams = 100;
  uint64_t ping_interval_ms = 10000;
  uint64_t ping_timeout_ms = 20000;
  uint64_t connect_timeout_ms = 10000;
};

// tls.cc
SSL_CTX* NewContext(const std::string& key, const std::string& chain, const std::string& root, bool server,
                    std::string* err);
std::vector<std::string> PeerUris(SSL* ssl);
std::string TlsError(SSL* ssl, int ret);

uint64_t NowMs();

// What went wrong on a socket whose poll failed: libuv reports EPOLLERR (a reset, say) as EBADF.
int SocketError(int fd, int uv_status);

class Session;

struct Stream {
  Session* s;
  int32_t id = -1;      // the HTTP/2 stream id
  uint32_t handle = 0;  // what JavaScript calls it: its own number for client streams, the id on servers
  int fd = -1;  // the plaintext side; ours once attached
  uv_poll_t* poll = nullptr;
  int events = 0;
  ByteQueue up;    // read from fd, not yet framed
  ByteQueue down;  // arrived on the stream, not yet written to fd
  bool attached = false, fd_eof = false, fd_shut = false, fd_closed = false;
  bool peer_end = false, h2_closed = false, done = false;
  uint64_t read = 0, written = 0;
  int status = 0;
  uint32_t rst = 0;
  std::string error;
  std::vector<std::string> headers;  // server: the request's, name/value flat
  size_t header_bytes = 0;           // server: the request's header list size (RFC 9113 §6.5.2)

  void Attach(int plain_fd);
  void UpdatePoll();
  void ReadUp();
  void WriteDown();
  void FdFailed(int err);
  void CloseFd(bool reset);
  void MaybeFinish();
};

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
  void Request(uint32_t handle, const std::vector<std::string>& headers);
  void Respond(uint32_t stream, int status, int fd);
  void Attach(uint32_t handle, int fd);
  void Cancel(uint32_t handle);
  void Close(bool graceful);

  // From streams and nghttp2.
  void Flush();
  void Consume(Stream* st, size_t n);
  void Fail(const char* kind, const std::string& reason);
  Stream* Find(int32_t id);
  Stream* ByHandle(uint32_t handle);
  void Finished(Stream* st);
  nghttp2_session* h2() { return h2_; }
  ByteQueue& out() { return out_; }
  bool OnFrame(const nghttp2_frame* f);
  void OnStreamClose(int32_t id, uint32_t code);
  void OnHeader(int32_t id, const nghttp2_nv& nv);
  void OnBeginHeaders(int32_t id);
  void OnData(int32_t id, const uint8_t* data, size_t len);
  ByteQueue& tls_out() { return tls_out_; }

 private:
  enum State { kHandshake, kOpen, kClosed };
  void OnTcp(int status, int events);
  void OnTimer();
  void Established();
  void ReadTls();
  void ReadOn();  // reads on in a later turn of the loop: this wake-up's budget is spent
  void SetTcpEvents(int ev);
  bool SendTls();
  void WriteDirty();
  void Announce();
  void Terminate(const char* kind, const std::string& reason, bool graceful);

  State state_ = kHandshake;
  int fd_;
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
  uint64_t started_, last_recv_, last_ping_ = 0;
  std::string peer_;
  std::unordered_map<int32_t, Stream*> streams_;
  std::unordered_map<uint32_t, Stream*> handles_;  // client streams, by JavaScript's number
};

// pipe.cc: a plaintext relay between two sockets (ours from then on); `done` and `close` under id.
void StartPipe(uint32_t id, int a, int b);
void ReapPipes();

// Registry (session.cc), relay thread only; the counts may be read from any thread.
Session* FindSession(uint32_t id);
void AddSession(uint32_t id, int fd, SSL_CTX* ctx, bool server, const std::string& identity, const Settings& cfg);
void Reap();
void Graveyard(Stream* st);
size_t SessionCount();
size_t StreamCount();

}  // namespace weft::relay
