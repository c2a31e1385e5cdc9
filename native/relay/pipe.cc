// A plaintext relay between two sockets on the relay thread: the node-local fast path, traffic to
// destinations outside the mesh, and plaintext inbound where PeerAuthentication permits it. The
// rules are a tunnel's: each direction's FIN passes through as a shutdown, a reset or error on
// either side resets both, and bytes are counted per direction.
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "byte_queue.h"
#include "pipe.h"
#include "relay.h"
#include "util.h"

namespace weft::relay {
namespace {

constexpr size_t kPending = 256 * 1024;  // read from one side, not yet written to the other

class Pipe {
 public:
  Pipe(uint32_t id, int a, int b) : id_(id) {
    side_[0].fd = a;
    side_[1].fd = b;
    for (int i = 0; i < 2; i++) {
      side_[i].poll = static_cast<uv_poll_t*>(calloc(1, sizeof(uv_poll_t)));
      uv_poll_init(Loop(), side_[i].poll, side_[i].fd);
      side_[i].poll->data = this;
    }
  }

  void Start() {
    Update(0);
    Update(1);
  }

 private:
  struct Side {
    int fd = -1;
    uv_poll_t* poll = nullptr;
    int events = 0;
    ByteQueue out;  // from the other side, to be written here
    bool eof = false, shut = false;
    uint64_t bytes_read = 0;  // from this side's socket: `done`'s n1 (side 0) and n2 (side 1)
  };

  static void OnPoll(uv_poll_t* p, int status, int ev) {
    Entry guard;
    auto* self = static_cast<Pipe*>(p->data);
    int i = p == self->side_[0].poll ? 0 : 1;
    if (status < 0) return self->Fail(SocketError(self->side_[i].fd, status));
    if (ev & UV_READABLE) self->Read(i);
    if (!self->done_ && (ev & UV_WRITABLE)) self->Write(i);
    if (!self->done_) {
      self->Update(0);
      self->Update(1);
    }
  }

  void Read(int i) {
    Side& from = side_[i];
    Side& to = side_[1 - i];
    while (to.out.size() < kPending) {
      size_t room;
      uint8_t* p = to.out.tail(&room);
      ssize_t n = ::read(from.fd, p, room);
      if (n > 0) {
        to.out.commit(static_cast<size_t>(n));
        from.bytes_read += static_cast<uint64_t>(n);
        if (static_cast<size_t>(n) < room) break;
        continue;
      }
      to.out.consume(0);
      if (n == 0) from.eof = true;
      else if (errno != EAGAIN && errno != EINTR) return Fail(errno);
      break;
    }
    Write(1 - i);
  }

  void Write(int i) {
    Side& s = side_[i];
    while (!s.out.empty()) {
      ssize_t n = s.out.send_to(s.fd);
      if (n > 0) {
        s.out.consume(static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      return Fail(n < 0 ? errno : EPIPE);
    }
    if (side_[1 - i].eof && !s.shut) {
      s.shut = true;
      ::shutdown(s.fd, SHUT_WR);
    }
    if (side_[0].shut && side_[1].shut) Finish(false);
  }

  void Update(int i) {
    Side& s = side_[i];
    int ev = 0;
    if (!s.eof && side_[1 - i].out.size() < kPending) ev |= UV_READABLE;
    if (!s.out.empty()) ev |= UV_WRITABLE;
    if (ev == s.events) return;
    s.events = ev;
    if (ev) uv_poll_start(s.poll, ev, OnPoll);
    else uv_poll_stop(s.poll);
  }

  void Fail(int err) {
    const char* name = strerrorname_np(err);
    error_ = std::string("tcp: ") + (name ? name : std::to_string(err));
    Finish(true);
  }

  void Finish(bool reset) {
    if (done_) return;
    done_ = true;
    for (Side& s : side_) {
      uv_poll_stop(s.poll);
      uv_close(reinterpret_cast<uv_handle_t*>(s.poll), [](uv_handle_t* h) { free(h); });
      if (reset) {
        linger l{1, 0};  // a reset on one side becomes a reset on the other
        setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      }
      ::close(s.fd);
      s.out.consume(s.out.size());
    }
    Event ev{"done", id_, 0, static_cast<double>(side_[0].bytes_read), static_cast<double>(side_[1].bytes_read)};
    ev.text = error_;
    Emit(std::move(ev));
    Event closed{"close", id_};
    closed.list.push_back("closed");
    Emit(std::move(closed));
    PipeDone(this);
  }

  static void PipeDone(Pipe* p);

  uint32_t id_;
  Side side_[2];
  bool done_ = false;
  std::string error_;
};

std::vector<Pipe*>& g_dead_pipes = *new std::vector<Pipe*>();
void Pipe::PipeDone(Pipe* p) { g_dead_pipes.push_back(p); }

}  // namespace

void StartPipe(uint32_t id, int a, int b) { (new Pipe(id, a, b))->Start(); }

void ReapPipes() {
  for (Pipe* p : g_dead_pipes) delete p;
  g_dead_pipes.clear();
}

}  // namespace weft::relay
