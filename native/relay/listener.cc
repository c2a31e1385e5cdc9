// Listening sockets polled on the relay thread (listener.h). JavaScript hands over a listening fd
// (duplicated: the socket stays JavaScript's, which an agent upgrade passes on to the next agent)
// and hears `accept` once per connection: the listener, the new fd (now JavaScript's), the peer's
// address and port, and the original destination when the relay already took it from the
// capture's map; or `xout` for one the relay opened itself on a grant (express_out.h). Accepts are
// bounded per wake-up: the poll is level-triggered, so a listener with more waiting is served
// again after every other ready socket of the loop, and one busy pod cannot starve the others (nor
// the relay's streams).
#include "listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

#include "express_out.h"
#include "relay.h"
#include "util.h"

namespace weft::relay {
namespace {

constexpr uint32_t kMaxBatch = 1024;
// After an accept error such as EMFILE the connection stays queued and a level-triggered poll would
// fire again at once: pause instead of spinning the relay thread.
constexpr uint64_t kPauseMs = 100;
// Accepted fds wait in the event queue until JavaScript takes them. While JavaScript is that far
// behind, leave new connections in the kernel's backlog (as a busy Node loop would) rather than
// pile up descriptors it cannot handle yet.
constexpr size_t kMaxQueued = 4096;
constexpr uint64_t kBehindMs = 10;

struct Listener {
  uint32_t id;
  int fd;  // our duplicate, closed by unlisten
  uint32_t batch;
  uv_poll_t* poll;
  uv_timer_t* pause;
};

// Relay thread only.
std::unordered_map<uint32_t, Listener*>& g_listeners = *new std::unordered_map<uint32_t, Listener*>();
uint32_t g_next_listener = 1;  // JavaScript thread only

void OnReadable(uv_poll_t* p, int status, int events);

void Resume(uv_timer_t* t) {
  auto* l = static_cast<Listener*>(t->data);
  uv_poll_start(l->poll, UV_READABLE, OnReadable);
}

void Peer(const sockaddr_storage& ss, std::string* host, int* port) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    *port = ntohs(a->sin6_port);
  }
  *host = buf;
}

// status < 0 (an error on the listening socket) needs nothing of its own: accept4 reports it.
void OnReadable(uv_poll_t* p, int, int) {
  Entry guard;
  auto* l = static_cast<Listener*>(p->data);
  if (QueuedEvents() >= kMaxQueued) {
    uv_poll_stop(p);
    uv_timer_start(l->pause, Resume, kBehindMs, 0);
    return;
  }
  for (uint32_t i = 0; i < l->batch; i++) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int fd = accept4(l->fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;  // that one is gone; the next may wait
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      Event ev{"listenError", l->id};
      ev.n1 = errno;
      ev.text = ErrName(errno);
      Emit(std::move(ev));
      uv_poll_stop(p);
      uv_timer_start(l->pause, Resume, kPauseMs, 0);
      return;
    }
    SetNoDelay(fd);
    Event ev{"accept", l->id, fd};
    int port = 0;
    Peer(ss, &ev.text, &port);
    if (ExpressOutbound(l->id, fd, ss, &ev)) continue;  // opened on a grant: JavaScript hears `xout`
    ev.n1 = port;
    ev.n2 = i;  // its place in this wake-up's batch: lets tests see the bound
    Emit(std::move(ev));
  }
}

int FdArg(const Napi::Value& v, const char* what) {
  if (!v.IsNumber() || v.As<Napi::Number>().Int64Value() < 0 || v.As<Napi::Number>().Int64Value() > INT32_MAX)
    throw Napi::TypeError::New(v.Env(), std::string("weft relay: ") + what + ": fd must be a file descriptor");
  return v.As<Napi::Number>().Int32Value();
}

// listen(fd, batch) → id: polls a duplicate of the listening socket fd on the relay thread.
Napi::Value Listen(const Napi::CallbackInfo& info) {
  if (!Started()) throw Napi::Error::New(info.Env(), "weft relay: init() first");
  int given = FdArg(info[0], "listen");
  if (!info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "weft relay: listen: batch must be a number");
  double b = info[1].As<Napi::Number>().DoubleValue();
  if (!(b >= 1 && b <= kMaxBatch) || b != static_cast<uint32_t>(b))
    throw Napi::TypeError::New(info.Env(), "weft relay: listen: batch must be a whole number from 1 to " + std::to_string(kMaxBatch));
  uint32_t batch = static_cast<uint32_t>(b);
  int accepting = 0;
  socklen_t len = sizeof(accepting);
  if (getsockopt(given, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || !accepting)
    throw Napi::TypeError::New(info.Env(), "weft relay: listen: fd " + std::to_string(given) + " is not a listening socket");
  int fd = fcntl(given, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) throw Napi::Error::New(info.Env(), std::string("weft relay: listen: dup: ") + strerror(errno));
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);  // shared with JavaScript's fd, which Node sets so too
  uint32_t id = g_next_listener++;
  Post([id, fd, batch] {
    auto* l = new Listener{id, fd, batch, static_cast<uv_poll_t*>(calloc(1, sizeof(uv_poll_t))),
                           static_cast<uv_timer_t*>(calloc(1, sizeof(uv_timer_t)))};
    uv_timer_init(Loop(), l->pause);
    l->pause->data = l;
    int err = uv_poll_init(Loop(), l->poll, fd);
    if (err != 0) {
      Event ev{"listenError", id};
      ev.n1 = -err;
      ev.text = ErrName(-err);
      Emit(std::move(ev));
      free(l->poll);
      CloseHandle(reinterpret_cast<uv_handle_t*>(l->pause));
      close(fd);
      delete l;
      return;  // unlisten still answers, with nothing to stop
    }
    l->poll->data = l;
    g_listeners[id] = l;
    uv_poll_start(l->poll, UV_READABLE, OnReadable);
  });
  return Napi::Number::New(info.Env(), id);
}

// unlisten(id): stops polling and closes the duplicate; JavaScript's fd stays open. `unlisten` comes
// after every `accept` of that listener, so JavaScript knows when none can follow.
Napi::Value Unlisten(const Napi::CallbackInfo& info) {
  if (!Started()) throw Napi::Error::New(info.Env(), "weft relay: init() first");
  if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "weft relay: unlisten: id must be a number");
  uint32_t id = info[0].As<Napi::Number>().Uint32Value();
  Post([id] {
    auto it = g_listeners.find(id);
    if (it != g_listeners.end()) {
      Listener* l = it->second;
      g_listeners.erase(it);
      ForgetOutbound(id);
      uv_poll_stop(l->poll);
      uv_timer_stop(l->pause);
      CloseHandle(reinterpret_cast<uv_handle_t*>(l->poll));
      CloseHandle(reinterpret_cast<uv_handle_t*>(l->pause));
      close(l->fd);
      delete l;
    }
    Emit(Event{"unlisten", id});
  });
  return info.Env().Undefined();
}

// resetFd(fd): closes an accepted connection JavaScript refused with a reset (SO_LINGER 0), as
// Node's resetAndDestroy() does: the app sees what it would without a mesh.
Napi::Value ResetFd(const Napi::CallbackInfo& info) {
  int fd = FdArg(info[0], "resetFd");
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  if (close(fd) != 0) throw Napi::Error::New(info.Env(), "weft relay: resetFd " + std::to_string(fd) + ": " + ErrName(errno));
  return info.Env().Undefined();
}

}  // namespace

void RegisterListener(Napi::Env env, Napi::Object exports) {
  exports.Set("listen", Napi::Function::New(env, Listen));
  exports.Set("unlisten", Napi::Function::New(env, Unlisten));
  exports.Set("resetFd", Napi::Function::New(env, ResetFd));
}

}  // namespace weft::relay
