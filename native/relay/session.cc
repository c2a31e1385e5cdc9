// One HBONE connection (session.h): TLS handshake and peer check, HTTP/2 settings, reading (TLS
// records into nghttp2) and writing (nghttp2's frames through SSL_write into large send()s),
// keepalive, JavaScript's commands and the session's end. Output is framed by nghttp2 into one queue
// (DATA payloads are copied once, from the stream's `up` queue, with NGHTTP2_DATA_FLAG_NO_COPY) and
// handed to SSL_write in large pieces; input is read a socket buffer at a time (read-ahead) and fed
// to nghttp2.
//
// Flow control is end to end: received DATA is acknowledged to the peer (WINDOW_UPDATE) only once
// written to the plaintext socket, so a slow reader holds at most one stream window here, and a
// plaintext socket is read only while less than kUpMax waits to be framed (stream.h).
#include "session.h"

#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "h2_callbacks.h"
#include "registry.h"
#include "relay.h"
#include "tls.h"
#include "util.h"

namespace weft::relay {
namespace {

constexpr uint64_t kTickMs = 1000;
// Plaintext taken from one session's TLS per wake-up: past it, the session yields to the rest of the
// loop and is read on in a later turn. Without it one peer that keeps its socket full (a flood of
// WINDOW_UPDATE or PING frames costs it nothing) holds the relay thread, and every other tunnel.
constexpr size_t kReadBudget = 256 * 1024;
// A server's drain waits this long for the ACK of the PING sent after its shutdown notice before it
// names the last stream processed anyway: a peer that never answers holds no session open for it.
constexpr uint64_t kNoticeWaitMs = 1000;
// The drain's PING, told apart from keepalive PINGs (all zeros) by its payload.
constexpr uint8_t kDrainPing[8] = {'w', 'e', 'f', 't', 'd', 'r', 'a', 'i'};
constexpr int32_t kLastStreamMax = (1u << 31) - 1;

// Sessions that used up their read budget, by id (a session may be gone by the next turn), and the
// idle handle that reads on from them once the loop has polled everything else: OpenSSL may already
// hold the rest (read-ahead), where the socket's poll would never report it.
auto& g_read_on = *new std::vector<uint32_t>();
uv_idle_t* g_read_on_idle = nullptr;

// Sessions that called Flush this turn, by id (one may be gone before FlushSessions runs).
auto& g_flush = *new std::vector<uint32_t>();
// Active while flushes are left over: an active idle handle makes the loop poll without blocking.
uv_idle_t* g_flush_idle = nullptr;

}  // namespace

void Session::OnTick(uv_timer_t* t) {
  Entry guard;
  static_cast<Session*>(t->data)->OnTimer();
}

Session::Session(uint32_t sid, int fd, SSL_CTX* ctx, bool srv, std::string identity, const Settings& cfg)
    : id(sid), server(srv), fd_(fd), reader_{fd}, identity_(std::move(identity)), cfg_(cfg) {
  started_ = last_recv_ = NowMs();
  SetNoDelay(fd_);
  ssl_ = SSL_new(ctx);
  BIO* rbio = NewSocketReadBio(&reader_);
  BIO* wbio = NewQueueBio(&tls_out_);
  SSL_set_bio(ssl_, rbio, wbio);
  if (server) SSL_set_accept_state(ssl_);
  else SSL_set_connect_state(ssl_);
  poll_ = static_cast<uv_poll_t*>(calloc(1, sizeof(uv_poll_t)));
  uv_poll_init(Loop(), poll_, fd_);
  poll_->data = this;
  timer_ = static_cast<uv_timer_t*>(calloc(1, sizeof(uv_timer_t)));
  uv_timer_init(Loop(), timer_);
  timer_->data = this;
  uv_timer_start(timer_, OnTick, kTickMs, kTickMs);
  uv_unref(reinterpret_cast<uv_handle_t*>(timer_));
}

Session::~Session() {
  if (h2_) nghttp2_session_del(h2_);
  SSL_free(ssl_);
}

void Session::SetTcpEvents(int ev) {
  if (state_ == kClosed || ev == events_) return;
  events_ = ev;
  uv_poll_start(poll_, ev, [](uv_poll_t* p, int status, int e) {
    Entry guard;
    static_cast<Session*>(p->data)->OnTcp(status, e);
  });
}

void Session::OnTcp(int status, int ev) {
  if (status < 0) return Fail("tcp", ErrName(SocketError(fd_, status)));
  if (state_ == kHandshake) return Handshake();
  if (ev & UV_READABLE) ReadTls();
  Flush();
}

// Sends queued TLS records; false when the session failed. Leaves the rest queued on EAGAIN.
bool Session::SendTls() {
  while (!tls_out_.empty()) {
    ssize_t n = tls_out_.send_to(fd_);
    if (n > 0) {
      tls_out_.consume(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
    Fail(ready_ ? "tcp" : "tls", ErrName(n < 0 ? errno : EPIPE));
    return false;
  }
  return true;
}

// New requests reach JavaScript (which dials an upstream for each) only once the read that brought
// them is done, and only those still open: a peer that sends HEADERS and RST_STREAM back to back
// ("rapid reset") gets no dial out of it. nghttp2 answers a flood of such resets with GOAWAY.
void Session::Announce() {
  std::vector<int32_t> ids;
  ids.swap(new_streams_);
  for (int32_t sid : ids) {
    Stream* st = Find(sid);
    if (!st || st->h2_closed) continue;
    if (express_pod_ && !grants_.empty() && TryExpress(st)) continue;
    // The peer was named once, in `ready`; n1 and n2 count dials (dials_connecting_, session.h).
    Event ev{"stream", id, sid, static_cast<double>(dials_connecting_), dials_received_};
    ev.list = std::move(st->headers);
    st->headers.clear();
    Emit(std::move(ev));
  }
}

// A CONNECT this session was granted (express.h): dialled as RespondDial would, with a socket from
// the pod's supply. Anything short of a match goes to JavaScript as before.
bool Session::TryExpress(Stream* st) {
  if (closing_ || drain_ != kNone || state_ != kOpen) return false;
  const std::string* method = nullptr;
  const std::string* authority = nullptr;
  for (size_t i = 0; i + 1 < st->headers.size(); i += 2) {  // the last of a name wins, as in JavaScript
    if (st->headers[i] == ":method") method = &st->headers[i + 1];
    else if (st->headers[i] == ":authority") authority = &st->headers[i + 1];
  }
  if (!method || !authority || *method != "CONNECT") return false;
  auto it = grants_.find(*authority);
  if (it == grants_.end()) return false;
  uint64_t timeout_ms = 0;
  int fd = ExpressTake(express_pod_, it->second, dials_connecting_, &timeout_ms);
  if (fd < 0) return false;
  // Before the dial, which may end (and the stream with it) before it returns.
  Event ev{"xopen", id, st->id};
  ev.n1 = it->second.tag;
  ev.text = *authority;
  Emit(std::move(ev));
  st->headers.clear();
  dials_connecting_++;
  st->target = it->second.target;
  st->Dial(fd, it->second.addr, it->second.len, timeout_ms);
  return true;
}

void Session::Grant(const std::string& authority, const ExpressGrant& g) {
  if (!server || state_ == kClosed) return;
  auto it = grants_.find(authority);
  if (it != grants_.end()) it->second = g;
  else if (grants_.size() < kMaxGrantsPerSession) grants_.emplace(authority, g);
}

void Session::WriteDirty() {
  std::vector<Stream*> d;
  d.swap(dirty_);
  for (Stream* st : d) {
    st->WriteDown();
    if (!st->fd_closed) st->UpdatePoll();
  }
}

void Session::Handshake() {
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
  if (!SendTls()) return;
  if (r == 1) return Established();
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return SetTcpEvents(UV_READABLE | (tls_out_.empty() ? 0 : UV_WRITABLE));
  Fail(server ? "handshake" : "tls", TlsError(ssl_, r));
}

void Session::Established() {
  const unsigned char* alpn = nullptr;
  unsigned int alpn_len = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
  if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0)
    return Fail(server ? "handshake" : "tls", "ALPN " + std::string(reinterpret_cast<const char*>(alpn), alpn_len) +
                                                  " is not h2");
  std::vector<std::string> uris = PeerUris(ssl_);
  if (server) {
    std::vector<std::string> spiffe;
    for (auto& u : uris)
      if (u.rfind("spiffe://", 0) == 0) spiffe.push_back(u);
    if (spiffe.size() != 1) return Fail("handshake", "peer certificate has no single SPIFFE identity");
    std::string td = spiffe[0].substr(9, spiffe[0].find('/', 9) - 9);
    if (td != identity_) return Fail("handshake", "peer trust domain " + td + " is not " + identity_);
    peer_ = spiffe[0];
  } else if (std::find(uris.begin(), uris.end(), identity_) == uris.end()) {
    std::string got;
    for (auto& u : uris) got += (got.empty() ? "" : ", ") + u;
    return Fail("tls", "server identity [" + got + "] is not " + identity_);
  }
  state_ = kOpen;
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // Flood caps nghttp2 offers, set here rather than left to its defaults: frames that make us answer
  // (PING and SETTINGS ACKs) may not pile up unsent beyond this (then GOAWAY), a SETTINGS frame may
  // carry this many entries, and our HPACK encoder keeps at most 4 KiB whatever table the peer
  // offers. Node's nghttp2 (>= 1.61) also limits RST_STREAM floods ("rapid reset") and CONTINUATION
  // frames per header block by default; Debian's headers (1.52) do not declare those setters.
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
  int rv = server ? nghttp2_session_server_new2(&h2_, Callbacks(), this, opt)
                  : nghttp2_session_client_new2(&h2_, Callbacks(), this, opt);
  nghttp2_option_del(opt);
  if (rv != 0) return Fail("h2", nghttp2_strerror(rv));
  std::vector<nghttp2_settings_entry> iv = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg_.stream_window},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, cfg_.max_frame},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg_.max_header_list},
  };
  if (server) iv.push_back({NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg_.max_streams});
  else iv.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
  nghttp2_submit_settings(h2_, NGHTTP2_FLAG_NONE, iv.data(), iv.size());
  nghttp2_session_set_local_window_size(h2_, NGHTTP2_FLAG_NONE, 0, static_cast<int32_t>(cfg_.connection_window));
  if (server) {
    ready_ = true;
    Event ev{"ready", id};
    ev.text = peer_;
    Emit(std::move(ev));
  }
  last_recv_ = NowMs();
  SetTcpEvents(UV_READABLE);
  ReadTls();  // the peer's preface may have come with the handshake
  if (drain_ == kPending && state_ == kOpen) Close(true);  // drained while in its handshake
  Flush();
}

void Session::ReadTls() {
  static uint8_t buf[64 * 1024];
  bool got = false;
  size_t budget = kReadBudget;
  // Until WANT_READ (with read-ahead, OpenSSL may hold bytes the poll can no longer see), or until
  // this wake-up's budget is spent: then the rest waits for a later turn of the loop (ReadOn).
  for (;;) {
    if (state_ != kOpen) return;
    if (budget == 0) {
      last_recv_ = NowMs();
      WriteDirty();
      Announce();
      return ReadOn();
    }
    ERR_clear_error();
    int n = SSL_read(ssl_, buf, static_cast<int>(std::min(sizeof(buf), budget)));
    if (n > 0) {
      got = true;
      budget -= static_cast<size_t>(n);
      ssize_t r = nghttp2_session_mem_recv(h2_, buf, static_cast<size_t>(n));
      if (r < 0) return Fail("h2", nghttp2_strerror(static_cast<int>(r)));
      // Nothing buffered and the socket's last read was short: another SSL_read would only read
      // EAGAIN (a request's worth is one record). The poll is level-triggered, so what arrives
      // after that read wakes us again.
      if (state_ == kOpen && reader_.drained && !SSL_has_pending(ssl_)) {
        last_recv_ = NowMs();
        WriteDirty();
        return Announce();
      }
      continue;
    }
    if (got) last_recv_ = NowMs();  // once per wake-up, not per record
    int e = SSL_get_error(ssl_, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      WriteDirty();
      return Announce();
    }
    WriteDirty();  // the session fails next: its new streams end unannounced
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
      return Fail(ready_ ? "closed" : "tls", ready_ ? "peer closed the connection"
                                                    : "peer closed the connection before HTTP/2 settings");
    return Fail(ready_ ? "tcp" : "tls", TlsError(ssl_, n));
  }
}

void Session::ReadOn() {
  if (read_on_) return;
  read_on_ = true;
  if (!g_read_on_idle) {
    g_read_on_idle = static_cast<uv_idle_t*>(calloc(1, sizeof(uv_idle_t)));
    uv_idle_init(Loop(), g_read_on_idle);
  }
  if (g_read_on.empty())
    uv_idle_start(g_read_on_idle, [](uv_idle_t* h) {
      Entry guard;
      std::vector<uint32_t> ids;
      ids.swap(g_read_on);
      uv_idle_stop(h);  // started again by any session that spends its budget once more
      for (uint32_t sid : ids) {
        Session* s = FindSession(sid);
        if (!s) continue;
        s->read_on_ = false;
        s->ReadTls();
        s->Flush();
      }
    });
  g_read_on.push_back(id);
}

void Session::Flush() {
  if (state_ != kOpen || flush_pending_) return;
  flush_pending_ = true;
  g_flush.push_back(id);
}

void FlushSessions() {
  // A session's flush can make another flush (a stream that ends frees room elsewhere): rounds
  // until none is left; prepare and check each run every turn, so a rare long chain waits a turn.
  std::vector<uint32_t> ids;
  for (int round = 0; round < 8 && !g_flush.empty(); round++) {
    ids.clear();
    ids.swap(g_flush);
    for (uint32_t sid : ids) {
      Session* s = FindSession(sid);
      if (!s) continue;
      s->flush_pending_ = false;
      s->FlushNow();
    }
  }
  if (g_flush.empty()) return;
  // Left for the next turn, which must come at once: from the prepare handle, the loop would
  // otherwise block in poll with these frames unsent until some other event woke it.
  if (!g_flush_idle) {
    g_flush_idle = static_cast<uv_idle_t*>(calloc(1, sizeof(uv_idle_t)));
    uv_idle_init(Loop(), g_flush_idle);
  }
  uv_idle_start(g_flush_idle, [](uv_idle_t* h) { uv_idle_stop(h); });  // one non-blocking turn
}

void Session::FlushNow() {
  if (state_ != kOpen) return;
  for (;;) {
    if (!SendTls()) return;
    if (tls_out_.size() >= kTlsOutMax) {
      write_blocked_ = true;
      SetTcpEvents(UV_READABLE | UV_WRITABLE);
      return;
    }
    if (!out_.empty()) {
      ERR_clear_error();
      int n = SSL_write(ssl_, out_.front(), static_cast<int>(out_.front_len()));
      if (n <= 0) return Fail("tcp", TlsError(ssl_, n));
      out_.consume(static_cast<size_t>(n));
      continue;
    }
    write_blocked_ = false;
    int rv = nghttp2_session_send(h2_);
    if (rv != 0) return Fail("h2", nghttp2_strerror(rv));
    if (state_ != kOpen) return;
    if (out_.empty()) {
      if (!SendTls()) return;
      break;
    }
  }
  if (!tls_out_.empty()) {
    write_blocked_ = true;
    return SetTcpEvents(UV_READABLE | UV_WRITABLE);
  }
  if (!nghttp2_session_want_read(h2_) && !nghttp2_session_want_write(h2_))
    return Terminate("closed", closing_ ? "closed" : "peer went away", true);
  SetTcpEvents(UV_READABLE);
}

void Session::Consume(Stream* st, size_t n) {
  if (!h2_ || n == 0) return;
  if (st->h2_closed) nghttp2_session_consume_connection(h2_, n);
  else nghttp2_session_consume(h2_, st->id, n);
}

void Session::OnTimer() {
  if (state_ == kClosed) return;
  uint64_t now = NowMs();
  if (!ready_) {
    if (now - started_ >= cfg_.connect_timeout_ms) Fail("timeout", "HBONE handshake timed out");
    return;
  }
  if (now - last_recv_ >= cfg_.ping_timeout_ms) return Fail("timeout", "no frames from the peer (ping timeout)");
  if (now - last_recv_ >= cfg_.ping_interval_ms && now - last_ping_ >= cfg_.ping_interval_ms) {
    last_ping_ = now;
    nghttp2_submit_ping(h2_, NGHTTP2_FLAG_NONE, nullptr);
    Flush();
  }
  // The timer was restarted when the notice went out (OnFrameSent), so its first tick since is the
  // end of the wait for the PING's ACK.
  if (state_ == kOpen && drain_ == kProbe) {
    FinishDrain();
    Flush();
  }
}

bool Session::OnFrame(const nghttp2_frame* f) {
  int32_t sid = f->hd.stream_id;
  switch (f->hd.type) {
    case NGHTTP2_SETTINGS:
      if (!server && !ready_ && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
        ready_ = true;
        Emit({"ready", id});
      }
      break;
    case NGHTTP2_GOAWAY:
      Emit({"goaway", id, 0, static_cast<double>(f->goaway.error_code)});
      break;
    case NGHTTP2_PING:
      // The drain's PING came back: the peer has read the notice, and every stream it opened before
      // that has arrived. Flushed once this read is done (never from inside nghttp2's receive).
      if (drain_ == kProbe && (f->hd.flags & NGHTTP2_FLAG_ACK) &&
          memcmp(f->ping.opaque_data, kDrainPing, sizeof(kDrainPing)) == 0)
        FinishDrain();
      break;
    case NGHTTP2_HEADERS: {
      Stream* st = Find(sid);
      if (!st) break;
      if (server && f->headers.cat == NGHTTP2_HCAT_REQUEST && st->header_bytes > cfg_.max_header_list) {
        // 431 Request Header Fields Too Large; OnFrameSent resets the stream once it is out.
        st->status = 431;
        nghttp2_nv nv{reinterpret_cast<uint8_t*>(const_cast<char*>(":status")),
                      reinterpret_cast<uint8_t*>(const_cast<char*>("431")), 7, 3, NGHTTP2_NV_FLAG_NONE};
        nghttp2_submit_response(h2_, sid, &nv, 1, nullptr);
      } else if (server && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        new_streams_.push_back(sid);  // told to JavaScript once this read is done (Announce)
      } else if (!server && f->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        // The app's socket came with the request: relay from now, without a round trip to JavaScript
        // (which still hears the response, and only closes its own descriptor). Else it is dropped.
        if (st->status == 200 && st->early_fd >= 0) {
          int fd = st->early_fd;
          st->early_fd = -1;
          st->Attach(fd);
        } else {
          st->DropEarly();
        }
        Emit({"response", id, static_cast<int32_t>(st->handle), static_cast<double>(st->status)});
        if (st->status != 200) nghttp2_submit_rst_stream(h2_, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
      }
      if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        st->peer_end = true;
        st->WriteDown();
      }
      break;
    }
    case NGHTTP2_DATA:
      if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        if (Stream* st = Find(sid)) {
          st->peer_end = true;
          st->WriteDown();
        }
      }
      break;
    default:
      break;
  }
  return true;
}

// The PING that times the drain's round trip must follow the notice on the wire, and nghttp2 sends
// PINGs ahead of GOAWAYs: so it is queued only once the notice is out.
void Session::OnFrameSent(const nghttp2_frame* f) {
  if (f->hd.type != NGHTTP2_GOAWAY || drain_ != kNotice || f->goaway.last_stream_id != kLastStreamMax) return;
  drain_ = kProbe;
  nghttp2_submit_ping(h2_, NGHTTP2_FLAG_NONE, kDrainPing);
  uv_timer_start(timer_, OnTick, kNoticeWaitMs, kTickMs);  // its next tick ends the wait (OnTimer)
}

void Session::OnBeginHeaders(int32_t sid) {
  auto* st = new Stream();
  st->s = this;
  st->id = sid;
  st->handle = static_cast<uint32_t>(sid);
  streams_[sid] = st;
  CountStream();
}

void Session::OnHeader(int32_t sid, const nghttp2_nv& nv) {
  Stream* st = Find(sid);
  if (!st) return;
  if (server) {
    // Past the cap nothing more is kept (the block is still decoded, to keep HPACK in step); the
    // request is refused with 431 when its headers are complete (OnFrame), never shown to JavaScript.
    st->header_bytes += nv.namelen + nv.valuelen + 32;
    if (st->header_bytes > cfg_.max_header_list) {
      st->headers.clear();
      return;
    }
  }
  std::string name(reinterpret_cast<const char*>(nv.name), nv.namelen);
  std::string value(reinterpret_cast<const char*>(nv.value), nv.valuelen);
  if (!server) {
    if (name == ":status") st->status = atoi(value.c_str());
    return;
  }
  if (st->headers.size() < 128) {
    st->headers.push_back(std::move(name));
    st->headers.push_back(std::move(value));
  }
}

void Session::OnData(int32_t sid, const uint8_t* data, size_t len) {
  Stream* st = Find(sid);
  if (!st || st->fd_closed || (st->status != 0 && st->status != 200)) {
    // No tunnel to carry it (refused, or the socket is gone): drop it, but keep the window open.
    nghttp2_session_consume(h2_, sid, len);
    return;
  }
  // Before the socket is attached (the answer is on its way) it waits here, within the stream window.
  // Written once this read of the TLS socket is done: one send() for many records.
  if (st->down.empty() && st->attached) dirty_.push_back(st);
  st->down.append(data, len);
}

void Session::OnStreamClose(int32_t sid, uint32_t code) {
  Stream* st = Find(sid);
  if (!st) return;
  st->h2_closed = true;
  st->rst = code;
  if (code != NGHTTP2_NO_ERROR) {
    if (st->attached && st->error.empty()) st->error = "stream reset (code " + std::to_string(code) + ")";
    st->CloseFd(true);  // a stream reset resets the TCP connection
  }
  if (st->attached && !st->fd_closed) st->UpdatePoll();
  st->MaybeFinish();
}

Stream* Session::Find(int32_t sid) {
  auto it = streams_.find(sid);
  return it == streams_.end() ? nullptr : it->second;
}

Stream* Session::ByHandle(uint32_t handle) {
  if (server) return Find(static_cast<int32_t>(handle));
  auto it = handles_.find(handle);
  return it == handles_.end() ? nullptr : it->second;
}

void Session::Finished(Stream* st) {
  // A stream the relay opened itself and the peer refused unprocessed: the app's socket goes back
  // to JavaScript (done's second list item), which tries it on another session as for its own.
  int handed_back = -1;
  if (st->express_listener && st->status == 0 && st->rst == NGHTTP2_REFUSED_STREAM && st->early_fd >= 0) {
    handed_back = st->early_fd;
    st->early_fd = -1;
  }
  st->DropEarly();  // never answered 200 (reset, refused, cancelled, the session ended): closed before `done`
  Event ev{"done", id, static_cast<int32_t>(st->handle), static_cast<double>(st->bytes_read),
           static_cast<double>(st->bytes_written), static_cast<double>(st->status)};
  ev.text = st->error;
  ev.list.push_back(std::to_string(st->rst));
  if (handed_back >= 0) ev.list.push_back(std::to_string(handed_back));
  Emit(std::move(ev));
  streams_.erase(st->id);
  handles_.erase(st->handle);
  RetireStream(st);
}

void Session::Request(uint32_t handle, const std::vector<std::string>& headers, int early_fd) {
  auto refuse = [&] {
    if (early_fd >= 0) ::close(early_fd);  // only our duplicate: JavaScript may retry the socket elsewhere
    // Never started: JavaScript may try another session (REFUSED_STREAM).
    Event ev{"done", id, static_cast<int32_t>(handle)};
    ev.list.push_back(std::to_string(NGHTTP2_REFUSED_STREAM));
    Emit(std::move(ev));
  };
  // After the peer's GOAWAY (a drain's notice too) nghttp2 would only refuse it once it is framed.
  if (state_ != kOpen || !ready_ || closing_ || !nghttp2_session_check_request_allowed(h2_)) return refuse();
  if (!Submit(handle, headers, early_fd)) return refuse();
  Flush();
}

Stream* Session::RequestOut(uint32_t handle, const std::vector<std::string>& headers, int app_fd,
                            uint32_t max_streams, uint32_t listener) {
  if (server || state_ != kOpen || !ready_ || closing_ || handles_.size() >= max_streams ||
      !nghttp2_session_check_request_allowed(h2_))
    return nullptr;
  Stream* st = Submit(handle, headers, app_fd);
  if (st) st->express_listener = listener;
  return st;
}

Stream* Session::Submit(uint32_t handle, const std::vector<std::string>& headers, int early_fd) {
  std::vector<nghttp2_nv> nva;
  for (size_t i = 0; i + 1 < headers.size(); i += 2)
    nva.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(headers[i].data())),
                   reinterpret_cast<uint8_t*>(const_cast<char*>(headers[i + 1].data())), headers[i].size(),
                   headers[i + 1].size(), NGHTTP2_NV_FLAG_NONE});
  auto* st = new Stream();
  st->s = this;
  st->handle = handle;
  nghttp2_data_provider dp;
  dp.source.ptr = st;
  dp.read_callback = ReadUpData;
  int32_t sid = nghttp2_submit_request(h2_, nullptr, nva.data(), nva.size(), &dp, st);
  if (sid < 0) {
    delete st;
    return nullptr;
  }
  st->id = sid;
  st->early_fd = early_fd;
  streams_[sid] = st;
  handles_[handle] = st;
  CountStream();
  return st;
}

// A server stream JavaScript may still answer: open, unanswered, not connecting.
bool Session::Answerable(const Stream* st) const {
  return state_ == kOpen && st && !st->h2_closed && st->status == 0 && !st->connecting;
}

void Session::Answer(Stream* st, int status) {
  st->status = status;
  std::string code = std::to_string(status);
  nghttp2_nv nv{reinterpret_cast<uint8_t*>(const_cast<char*>(":status")),
                reinterpret_cast<uint8_t*>(const_cast<char*>(code.data())), 7, code.size(), NGHTTP2_NV_FLAG_NONE};
  if (status == 200) {
    nghttp2_data_provider dp;
    dp.source.ptr = st;
    dp.read_callback = ReadUpData;
    nghttp2_submit_response(h2_, st->id, &nv, 1, &dp);
  } else {
    // The final response; OnFrameSent resets the stream once it is out.
    if (!st->down.empty()) Consume(st, st->down.size());
    st->down.consume(st->down.size());
    nghttp2_submit_response(h2_, st->id, &nv, 1, nullptr);
  }
}

void Session::Respond(uint32_t handle, int status, int fd) {
  Stream* st = ByHandle(handle);
  if (!Answerable(st)) {
    // Gone meanwhile: its `done` (status 0) has been sent or is on its way.
    if (fd >= 0) ::close(fd);
    return;
  }
  Answer(st, status);
  if (status == 200) st->Attach(fd);
  Flush();
}

void Session::RespondDial(uint32_t handle, int fd, const sockaddr_storage& addr, socklen_t len,
                          const std::string& target, uint64_t timeout_ms) {
  dials_received_++;
  Stream* st = ByHandle(handle);
  if (!Answerable(st)) {
    ::close(fd);  // gone meanwhile, as in Respond
    return;
  }
  dials_connecting_++;
  st->target = target;
  st->Dial(fd, addr, len, timeout_ms);
}

int Session::SpareDialFd(int family) { return express_pod_ ? ExpressSpare(express_pod_, family) : -1; }

// The connect ended while the stream was still open (an abandoned one ends in Stream::CloseFd).
void Session::Dialed(Stream* st, int err) {
  if (err == 0) {
    Answer(st, 200);
    st->Attach(st->fd);
  } else {
    st->error = "connect " + st->target + ": " + ErrName(err);  // the text Node's dial gives
    st->CloseFd(false);
    Answer(st, 503);
  }
  Flush();
}

void Session::Attach(uint32_t handle, int fd) {
  Stream* st = ByHandle(handle);
  if (state_ != kOpen || !st || st->h2_closed || st->status != 200 || st->attached) {
    // The tunnel is gone: the app sees what a reset stream gives it, a reset.
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    ::close(fd);
    return;
  }
  st->Attach(fd);
  Flush();
}

void Session::Cancel(uint32_t handle) {
  Stream* st = ByHandle(handle);
  if (state_ != kOpen || !st || st->h2_closed) return;
  nghttp2_submit_rst_stream(h2_, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
  Flush();
}

void Session::Close(bool graceful) {
  if (state_ == kClosed) return;
  if (!graceful) return Terminate("closed", "closed", false);
  if (state_ != kOpen) {
    // A client has nothing on a session still opening. A server lets the handshake finish and drains
    // the session once open (Established): whoever dialled before the drain is served, not cut.
    if (!server) return Terminate("closed", "closed", false);
    drain_ = kPending;
    return;
  }
  if (closing_) return;
  closing_ = true;
  if (server) return StartDrain();
  // A client's peer opens no streams (no push): one GOAWAY says all there is.
  nghttp2_submit_goaway(h2_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  Flush();
}

// A server's graceful close, RFC 9113 §6.8: a GOAWAY naming the last stream processed, sent at once,
// would refuse the streams the peer opened while it was on its way, and a peer may not know whether
// to retry those. So first the shutdown notice (last stream 2^31-1): the peer opens no more streams,
// and those already on their way are still served. Then a PING (OnFrameSent), and once its ACK is back
// (or kNoticeWaitMs passed) the real GOAWAY (FinishDrain); the session ends with its last stream.
void Session::StartDrain() {
  drain_ = kNotice;
  if (nghttp2_submit_shutdown_notice(h2_) != 0) FinishDrain();
  Flush();
}

void Session::FinishDrain() {
  drain_ = kFinal;
  nghttp2_submit_goaway(h2_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h2_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
}

void Session::Fail(const char* kind, const std::string& reason) { Terminate(kind, reason, false); }

void Session::Terminate(const char* kind, const std::string& reason, bool graceful) {
  if (state_ == kClosed) return;
  bool was_open = state_ == kOpen;
  state_ = kClosed;
  for (auto& [sid, st] : std::vector<std::pair<int32_t, Stream*>>(streams_.begin(), streams_.end())) {
    if (st->error.empty() && st->attached && !st->h2_closed) st->error = "session: " + reason;
    st->CloseFd(!st->h2_closed);
    st->h2_closed = true;
    st->MaybeFinish();
  }
  if (graceful && was_open) {
    SSL_shutdown(ssl_);  // close_notify, sent once and best effort: nothing waits for the answer
    if (!tls_out_.empty()) (void)tls_out_.send_to(fd_);
  }
  uv_poll_stop(poll_);
  CloseHandle(reinterpret_cast<uv_handle_t*>(poll_));
  uv_timer_stop(timer_);
  CloseHandle(reinterpret_cast<uv_handle_t*>(timer_));
  ::close(fd_);
  Event ev{"close", id};
  ev.text = reason;
  ev.list.push_back(kind);
  Emit(std::move(ev));
  RetireSession(this);
}

}  // namespace weft::relay
