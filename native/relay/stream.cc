// A CONNECT tunnel's plaintext side (stream.h): reading the socket into `up`, writing `down` to it,
// FIN and resets in both directions, and the stream's end.
#include "stream.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "relay.h"
#include "session.h"
#include "util.h"

namespace weft::relay {

void Stream::Attach(int plain_fd) {
  fd = plain_fd;
  attached = true;
  SetNoDelay(fd);
  if (!poll) {  // a socket dialled here keeps the poll its connect used
    poll = static_cast<uv_poll_t*>(calloc(1, sizeof(uv_poll_t)));
    uv_poll_init(Loop(), poll, fd);
    poll->data = this;
  }
  WriteDown();  // what arrived before the socket did
  UpdatePoll();
}

void Stream::DropEarly() {
  if (early_fd < 0) return;
  if (express_listener) {
    linger l{1, 0};
    setsockopt(early_fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  ::close(early_fd);
  early_fd = -1;
}

void Stream::Dial(int plain_fd, const sockaddr_storage& addr, socklen_t len, uint64_t timeout_ms) {
  fd = plain_fd;
  connecting = true;
  // A blocking connect would hold the relay thread, and every tunnel on it.
  for (int tries = 0;; tries++) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0) return DialDone(0);
    int err = errno;
    if (err == EINPROGRESS) break;
    // The source port the socket came bound to (native/net.cc BindDialPort) is in a live connection
    // to this very destination: another socket from the supply, which has the next ports.
    int spare = err == EADDRNOTAVAIL && tries < 3 ? s->SpareDialFd(addr.ss_family) : -1;
    if (spare < 0) return DialDone(err);
    ::close(fd);
    fd = spare;
  }
  poll = static_cast<uv_poll_t*>(calloc(1, sizeof(uv_poll_t)));
  if (int r = uv_poll_init(Loop(), poll, fd); r < 0) {
    free(poll);
    poll = nullptr;
    return DialDone(-r);
  }
  poll->data = this;
  // Writable (or an error) once the handshake is done; SO_ERROR says which.
  uv_poll_start(poll, UV_WRITABLE, [](uv_poll_t* p, int status, int) {
    Entry guard;
    auto* st = static_cast<Stream*>(p->data);
    st->DialDone(SocketError(st->fd, status));
  });
  connect_timer = static_cast<uv_timer_t*>(calloc(1, sizeof(uv_timer_t)));
  uv_timer_init(Loop(), connect_timer);
  connect_timer->data = this;
  uv_timer_start(connect_timer, [](uv_timer_t* t) {
    Entry guard;
    static_cast<Stream*>(t->data)->DialDone(ETIMEDOUT);
  }, timeout_ms, 0);
}

void Stream::StopConnect() {
  connecting = false;
  if (connect_timer) {
    uv_timer_stop(connect_timer);
    CloseHandle(reinterpret_cast<uv_handle_t*>(connect_timer));
    connect_timer = nullptr;
  }
  if (poll) uv_poll_stop(poll);
  events = 0;  // UpdatePoll restarts it with the relay's callback
  s->DialEnded();
}

void Stream::DialDone(int err) {
  if (!connecting) return;
  StopConnect();
  s->Dialed(this, err);
}

void Stream::UpdatePoll() {
  if (!attached || fd_closed) return;
  int ev = 0;
  if (!fd_eof && !h2_closed && up.size() < kUpMax) ev |= UV_READABLE;
  if (!down.empty()) ev |= UV_WRITABLE;
  if (ev == events) return;
  events = ev;
  if (ev == 0) {
    uv_poll_stop(poll);
    return;
  }
  uv_poll_start(poll, ev, [](uv_poll_t* p, int status, int e) {
    Entry guard;
    auto* st = static_cast<Stream*>(p->data);
    Session* s = st->s;
    if (status < 0) {
      st->FdFailed(SocketError(st->fd, status));
    } else {
      if (e & UV_WRITABLE) st->WriteDown();
      if ((e & UV_READABLE) && !st->fd_closed) st->ReadUp();
    }
    if (!s->dead()) s->Flush();
    if (!st->fd_closed) st->UpdatePoll();
  });
}

void Stream::ReadUp() {
  // While reads fill their block, more is waiting: take up to kUpMax per wake-up.
  size_t room = 0;
  ssize_t n = 0;
  do {
    if (up.size() >= kUpMax) return;
    uint8_t* p = up.tail(&room);
    n = ::read(fd, p, room);
    if (n <= 0) break;
    up.commit(static_cast<size_t>(n));
    bytes_read += static_cast<uint64_t>(n);
    nghttp2_session_resume_data(s->h2(), id);
  } while (static_cast<size_t>(n) == room);
  if (n > 0) return;
  if (n == 0) {
    up.consume(0);  // gives back the block the read did not fill
    fd_eof = true;
    nghttp2_session_resume_data(s->h2(), id);
  } else {
    up.consume(0);
    if (errno != EAGAIN && errno != EINTR) FdFailed(errno);
  }
}

void Stream::WriteDown() {
  if (!attached || fd_closed) return;
  while (!down.empty()) {
    ssize_t n = down.send_to(fd);
    if (n > 0) {
      down.consume(static_cast<size_t>(n));
      bytes_written += static_cast<uint64_t>(n);
      s->Consume(this, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    FdFailed(n < 0 ? errno : EPIPE);
    return;
  }
  if (peer_end && !fd_shut) {
    fd_shut = true;
    ::shutdown(fd, SHUT_WR);  // END_STREAM becomes FIN
  }
  MaybeFinish();
}

// RFC 9113 §8.5: a TCP error on a CONNECT tunnel resets the stream with CONNECT_ERROR.
void Stream::FdFailed(int err) {
  if (error.empty()) error = "tcp: " + ErrName(err);
  CloseFd(true);
  if (!h2_closed && !s->dead()) nghttp2_submit_rst_stream(s->h2(), NGHTTP2_FLAG_NONE, id, NGHTTP2_CONNECT_ERROR);
  MaybeFinish();
}

void Stream::CloseFd(bool reset) {
  if (fd_closed || fd < 0) return;
  if (connecting) {
    // Given up mid-connect (the peer reset the stream, or the session ended): never answered.
    StopConnect();
    if (error.empty()) error = "connect " + target + ": " + ErrName(ECONNABORTED);
  }
  fd_closed = true;
  if (poll) {
    uv_poll_stop(poll);
    CloseHandle(reinterpret_cast<uv_handle_t*>(poll));
    poll = nullptr;
  }
  if (reset) {
    linger l{1, 0};  // close with RST, as the peer's reset asks
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  ::close(fd);
  if (!down.empty() && !s->dead()) s->Consume(this, down.size());  // never written: give the window back
  down.consume(down.size());
  // What was read but not framed stays while the stream is open in HTTP/2: a DATA frame that got
  // WOULDBLOCK (the session's output is full) is retried with the length it was given, before the
  // RST_STREAM queued behind it, and must find its bytes (see OnSendData, h2_callbacks.cc). The
  // stream closes once that RST_STREAM is out, and `up` goes with it; at most kUpMax per stream
  // meanwhile.
  if (h2_closed) up.consume(up.size());
}

void Stream::MaybeFinish() {
  if (done || !h2_closed) return;
  if (connecting) CloseFd(true);  // closed with NO_ERROR mid-connect: the dial is abandoned all the same
  if (attached && !fd_closed) {
    // Closed with NO_ERROR: deliver what arrived, then close rather than leave a half-open socket.
    if (!down.empty()) return;
    CloseFd(false);
  }
  if (!down.empty() && !s->dead()) s->Consume(this, down.size());  // never attached: the window goes back
  done = true;
  s->Finished(this);
}

}  // namespace weft::relay
