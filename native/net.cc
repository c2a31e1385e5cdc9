// Sockets inside another network namespace, socket facts BPF maps are keyed by (netns cookie,
// addresses), cgroup ids, and mounting bpffs.
//
// A socket belongs to the netns of the thread that created it, for its whole life, and its fd is
// valid process-wide. So a short-lived std::thread setns()es into the pod netns, creates and
// configures the socket (or a batch of them: socketsInNetns), and exits; the Node main thread
// never changes namespace.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mount.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "common.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

namespace weft {
namespace {

struct SockAddr {
  sockaddr_storage ss;
  socklen_t len;
};

// Parses "a.b.c.d" or an IPv6 literal for the given family (4 or 6).
bool ParseAddr(int family, const std::string& addr, uint16_t port, SockAddr* out) {
  memset(out, 0, sizeof(*out));
  if (family == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&out->ss);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    out->len = sizeof(*sin);
    return inet_pton(AF_INET, addr.c_str(), &sin->sin_addr) == 1;
  }
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out->ss);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port);
  out->len = sizeof(*sin6);
  return inet_pton(AF_INET6, addr.c_str(), &sin6->sin6_addr) == 1;
}

struct SocketSpec {
  int netnsFd = -1;  // -1: the current netns
  int family = 4;
  bool udp = false;
  bool nonblock = true;
  int64_t mark = -1;
  bool transparent = false, reuseAddr = false, reusePort = false, freebind = false;
  int v6Only = -1;
  int sendBuffer = -1;  // > 0: SO_SNDBUF (a slow link's small buffer, for tests of backpressure)
  bool bind = false;
  SockAddr bindAddr{};
  int backlog = -1;  // >= 0: listen()
};

struct SocketResult {
  int fd = -1;
  int err = 0;
  std::string step;
};

// Creates and configures one socket in the calling thread's netns.
void CreateSocket(const SocketSpec& s, SocketResult* r) {
  auto failed = [&](const std::string& step) {
    r->err = errno;
    r->step = step;
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
  };
  int type = (s.udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC | (s.nonblock ? SOCK_NONBLOCK : 0);
  r->fd = socket(s.family == 6 ? AF_INET6 : AF_INET, type, 0);
  if (r->fd < 0) return failed("socket");
  int one = 1;
  if (s.mark >= 0) {
    uint32_t m = static_cast<uint32_t>(s.mark);
    if (setsockopt(r->fd, SOL_SOCKET, SO_MARK, &m, sizeof(m)) != 0) return failed("setsockopt(SO_MARK)");
  }
  if (s.reuseAddr && setsockopt(r->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
    return failed("setsockopt(SO_REUSEADDR)");
  if (s.reusePort && setsockopt(r->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
    return failed("setsockopt(SO_REUSEPORT)");
  if (s.transparent) {
    int rc = s.family == 6 ? setsockopt(r->fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one))
                           : setsockopt(r->fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one));
    if (rc != 0) return failed("setsockopt(IP_TRANSPARENT)");
  }
  if (s.freebind && setsockopt(r->fd, SOL_IP, IP_FREEBIND, &one, sizeof(one)) != 0)
    return failed("setsockopt(IP_FREEBIND)");
  if (s.family == 6 && s.v6Only >= 0 &&
      setsockopt(r->fd, IPPROTO_IPV6, IPV6_V6ONLY, &s.v6Only, sizeof(s.v6Only)) != 0)
    return failed("setsockopt(IPV6_V6ONLY)");
  if (s.sendBuffer > 0 && setsockopt(r->fd, SOL_SOCKET, SO_SNDBUF, &s.sendBuffer, sizeof(s.sendBuffer)) != 0)
    return failed("setsockopt(SO_SNDBUF)");
  if (s.bind && ::bind(r->fd, reinterpret_cast<const sockaddr*>(&s.bindAddr.ss), s.bindAddr.len) != 0)
    return failed("bind");
  if (s.backlog >= 0 && listen(r->fd, s.backlog) != 0) return failed("listen");
}

// The netns's ephemeral port range and reserved ports, read by a thread inside it (/proc/sys/net
// answers for the reader's netns).
struct PortRange {
  uint32_t lo = 32768, hi = 60999;
  std::vector<std::pair<uint32_t, uint32_t>> reserved;
  bool Reserved(uint32_t p) const {
    for (auto& r : reserved)
      if (p >= r.first && p <= r.second) return true;
    return false;
  }
};

PortRange ReadPortRange() {
  PortRange r;
  if (FILE* f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re")) {
    unsigned a = 0, b = 0;
    if (fscanf(f, "%u %u", &a, &b) == 2 && a >= 1 && a <= b && b <= 65535) r.lo = a, r.hi = b;
    fclose(f);
  }
  // "8080,9000-9010" (or empty)
  if (FILE* f = fopen("/proc/sys/net/ipv4/ip_local_reserved_ports", "re")) {
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    char* save = nullptr;
    for (char* tok = strtok_r(buf, ",\n ", &save); tok; tok = strtok_r(nullptr, ",\n ", &save)) {
      unsigned a = 0, b = 0;
      int k = sscanf(tok, "%u-%u", &a, &b);
      if (k == 1) r.reserved.emplace_back(a, a);
      else if (k == 2) r.reserved.emplace_back(a, b);
    }
  }
  return r;
}

// Binds a dial socket (SO_REUSEADDR set) to the wildcard address and the next free port of the
// ephemeral range, from *cursor on. Why: the agent dials the app at the pod's own address and closes
// first, so every connection leaves a TIME_WAIT to the same address and port in the pod netns. A
// port the kernel picks at connect() reuses one only as tcp_tw_reuse allows (by default: loopback
// only), so the pod ran out of ports at about range/60 s connections per second. A socket bound
// beforehand reuses a TIME_WAIT whenever its timestamps allow (RFC 6191's test), whatever the sysctl.
// A port another socket holds without SO_REUSEADDR (the app's own) or listens on is skipped; a live
// connection of ours to the same destination on the chosen port makes connect() fail EADDRNOTAVAIL,
// and the dialler tries again with another socket. Cycling the whole range keeps reuse rare.
// Returns 0, or the errno of a bind that failed for another reason; leaves the socket unbound (the
// kernel's choice) when no port in 256 could be had.
int BindDialPort(int fd, int family, const PortRange& range, uint32_t* cursor) {
  uint32_t size = range.hi - range.lo + 1;
  sockaddr_storage ss{};
  socklen_t len;
  if (family == 6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_any;
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_ANY);
    len = sizeof(*a);
  }
  for (int tries = 0; tries < 256; tries++) {
    uint32_t port = range.lo + (*cursor % size);
    *cursor = (*cursor + 1) % size;
    if (range.Reserved(port)) continue;
    if (family == 6) reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(static_cast<uint16_t>(port));
    else reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(static_cast<uint16_t>(port));
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) == 0) return 0;
    if (errno != EADDRINUSE && errno != EACCES) return errno;
  }
  return 0;
}

// Enters s.netnsFd (if set) and creates `count` sockets there; on failure closes what it made and
// leaves the error in *r. Runs on a thread of its own when a netns is given. With `ports`, each
// socket is also bound to its own source port from *ports on (BindDialPort).
void MakeSockets(const SocketSpec& s, int count, std::vector<int>* fds, SocketResult* r, uint32_t* ports) {
  if (s.netnsFd >= 0 && setns(s.netnsFd, CLONE_NEWNET) != 0) {
    r->err = errno;
    r->step = "setns(CLONE_NEWNET)";
    r->fd = -1;
    return;
  }
  PortRange range;
  if (ports) range = ReadPortRange();
  for (int i = 0; i < count; i++) {
    CreateSocket(s, r);
    if (r->fd >= 0 && ports) {
      if (int e = BindDialPort(r->fd, s.family, range, ports); e != 0) {
        close(r->fd);
        r->fd = -1;
        r->err = e;
        r->step = "bind";
      }
    }
    if (r->fd < 0) {
      for (int fd : *fds) close(fd);
      fds->clear();
      return;
    }
    fds->push_back(r->fd);
  }
}

SocketSpec ParseSpec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SocketSpec s;
  if (!(info[0].IsNumber() && info[0].As<Napi::Number>().Int32Value() == -1))
    s.netnsFd = FdArg(info[0], "netnsFd");
  Napi::Object o = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  auto flag = [&](const char* k) { return o.Has(k) && o.Get(k).ToBoolean().Value(); };
  auto num = [&](const char* k, int64_t def) {
    return o.Has(k) && o.Get(k).IsNumber() ? o.Get(k).As<Napi::Number>().Int64Value() : def;
  };
  s.family = static_cast<int>(num("family", 4));
  if (s.family != 4 && s.family != 6) throw Napi::TypeError::New(env, "family must be 4 or 6");
  s.udp = flag("udp");
  s.nonblock = !o.Has("nonblock") || flag("nonblock");
  s.mark = num("mark", -1);
  s.transparent = flag("transparent");
  s.reuseAddr = flag("reuseAddr");
  s.reusePort = flag("reusePort");
  s.freebind = flag("freebind");
  if (o.Has("v6Only") && !o.Get("v6Only").IsUndefined()) s.v6Only = flag("v6Only") ? 1 : 0;
  s.backlog = static_cast<int>(num("listen", -1));
  int64_t sndbuf = num("sendBuffer", -1);
  if (sndbuf != -1 && (sndbuf < 1 || sndbuf > INT32_MAX / 2)) throw Napi::RangeError::New(env, "sendBuffer must be 1..2^30");
  s.sendBuffer = static_cast<int>(sndbuf);
  if (o.Has("bind") && o.Get("bind").IsObject()) {
    Napi::Object b = o.Get("bind").As<Napi::Object>();
    std::string addr = b.Has("address") && b.Get("address").IsString()
                           ? b.Get("address").As<Napi::String>().Utf8Value()
                           : (s.family == 6 ? "::" : "0.0.0.0");
    int64_t port = b.Has("port") && b.Get("port").IsNumber() ? b.Get("port").As<Napi::Number>().Int64Value() : 0;
    if (port < 0 || port > 65535) throw Napi::RangeError::New(env, "bind.port must be 0..65535");
    if (!ParseAddr(s.family, addr, static_cast<uint16_t>(port), &s.bindAddr))
      throw Napi::TypeError::New(env, "bind.address '" + addr + "' is not an IPv" + std::to_string(s.family) + " address");
    s.bind = true;
  }
  return s;
}

// Runs MakeSockets, on a short-lived thread when the sockets belong to another netns (setns
// affects only the calling thread), and throws what it failed on.
std::vector<int> Sockets(Napi::Env env, const SocketSpec& s, int count, const char* fn, uint32_t* ports = nullptr) {
  std::vector<int> fds;
  SocketResult r;
  if (s.netnsFd >= 0) {
    std::thread t(MakeSockets, std::cref(s), count, &fds, &r, ports);
    t.join();
  } else {
    MakeSockets(s, count, &fds, &r, ports);
  }
  if (static_cast<int>(fds.size()) != count) {
    std::string hint;
    if (r.err == EINVAL && r.step.rfind("setns", 0) == 0) hint = "netnsFd is not a network namespace";
    if (r.err == EADDRINUSE) hint = "the address is in use in that netns (set reuseAddr, or close the old listener)";
    if (r.err == EADDRNOTAVAIL) hint = "no such local address in that netns (or use freebind/transparent)";
    throw ErrnoError(env, r.err, std::string(fn) + ": " + r.step, hint);
  }
  return fds;
}

// socketInNetns(netnsFd | -1, { family: 4|6, udp?, nonblock? (default true), mark?, transparent?,
//   reuseAddr?, reusePort?, freebind?, v6Only?, sendBuffer?, bind?: {address, port}, listen?: backlog }) -> fd
// A listening socket's sendBuffer is inherited by the sockets it accepts.
Napi::Value SocketInNetns(const Napi::CallbackInfo& info) {
  SocketSpec s = ParseSpec(info);
  return Napi::Number::New(info.Env(), Sockets(info.Env(), s, 1, "socketInNetns")[0]);
}

// socketsInNetns(netnsFd | -1, spec, count) -> fd[]: `count` identical sockets made by one thread,
// so a caller that needs many (upstream dials from a pod) pays for one thread, not one each.
// All or nothing: on failure none stays open. Sockets that bind are refused (they would collide).
Napi::Value SocketsInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SocketSpec s = ParseSpec(info);
  if (s.bind || s.backlog >= 0) throw Napi::TypeError::New(env, "socketsInNetns makes unbound sockets only (no bind, no listen)");
  int64_t count = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : -1;
  if (count < 1 || count > 1024) throw Napi::RangeError::New(env, "count must be 1..1024");
  std::vector<int> fds = Sockets(env, s, static_cast<int>(count), "socketsInNetns");
  Napi::Array out = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  return out;
}

// dialSocketsInNetns(netnsFd | -1, spec, count, cursor) -> { fds, cursor }: as socketsInNetns, each
// socket also SO_REUSEADDR and bound to its own source port (BindDialPort), ports taken round the
// netns's ephemeral range from `cursor` (a position in it); the cursor to pass next time comes back.
Napi::Value DialSocketsInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SocketSpec s = ParseSpec(info);
  if (s.bind || s.backlog >= 0 || s.udp) throw Napi::TypeError::New(env, "dialSocketsInNetns makes TCP dial sockets only (no bind, no listen, no udp)");
  s.reuseAddr = true;
  int64_t count = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : -1;
  if (count < 1 || count > 1024) throw Napi::RangeError::New(env, "count must be 1..1024");
  double c = info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : -1;
  if (!(c >= 0 && c <= 65535 && c == static_cast<uint32_t>(c))) throw Napi::RangeError::New(env, "cursor must be a whole number 0..65535");
  uint32_t cursor = static_cast<uint32_t>(c);
  std::vector<int> fds = Sockets(env, s, static_cast<int>(count), "dialSocketsInNetns", &cursor);
  Napi::Object o = Napi::Object::New(env);
  Napi::Array out = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  o.Set("fds", out);
  o.Set("cursor", cursor);
  return o;
}

// netnsCookieOfSocket(fd) -> bigint: SO_NETNS_COOKIE, the id BPF programs see as
// bpf_get_netns_cookie() for that namespace.
Napi::Value SocketNetnsCookie(const Napi::CallbackInfo& info) {
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(FdArg(info[0], "fd"), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
    throw ErrnoError(info.Env(), errno, "getsockopt(SO_NETNS_COOKIE)");
  return Napi::BigInt::New(info.Env(), cookie);
}

Napi::Object AddrToJs(Napi::Env env, const sockaddr_storage& ss) {
  Napi::Object o = Napi::Object::New(env);
  char buf[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
    o.Set("family", 4);
    o.Set("port", ntohs(sin->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
    o.Set("family", 6);
    o.Set("port", ntohs(sin6->sin6_port));
  } else {
    o.Set("family", ss.ss_family);
    o.Set("port", 0);
  }
  o.Set("address", buf);
  return o;
}

// sockName(fd, peer) -> {family, address, port}: getsockname, or getpeername when peer is true.
Napi::Value SockName(const Napi::CallbackInfo& info) {
  int fd = FdArg(info[0], "fd");
  bool peer = info[1].ToBoolean();
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  memset(&ss, 0, sizeof(ss));
  int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) throw ErrnoError(info.Env(), errno, peer ? "getpeername" : "getsockname");
  return AddrToJs(info.Env(), ss);
}

// connectFd(fd, address, port) -> true if connected now, false if in progress (EINPROGRESS).
// Node can wrap our unconnected sockets and connect them itself (net.Socket({fd}).connect);
// this exists for callers that must connect before handing the fd to Node.
Napi::Value ConnectFd(const Napi::CallbackInfo& info) {
  int fd = FdArg(info[0], "fd");
  std::string addr = StringArg(info[1], "address");
  int64_t port = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : -1;
  if (port < 0 || port > 65535) throw Napi::RangeError::New(info.Env(), "port must be 0..65535");
  SockAddr sa;
  if (!ParseAddr(4, addr, static_cast<uint16_t>(port), &sa) &&
      !ParseAddr(6, addr, static_cast<uint16_t>(port), &sa))
    throw Napi::TypeError::New(info.Env(), "address '" + addr + "' is not an IP address");
  if (connect(fd, reinterpret_cast<const sockaddr*>(&sa.ss), sa.len) == 0)
    return Napi::Boolean::New(info.Env(), true);
  if (errno == EINPROGRESS) return Napi::Boolean::New(info.Env(), false);
  throw ErrnoError(info.Env(), errno, "connect " + addr + ":" + std::to_string(port));
}

// originalDstSockopt(fd) -> {family, address, port} | null: conntrack's pre-NAT destination
// (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST) of a connection accepted after an iptables REDIRECT.
// null: conntrack has no entry; a tracked but un-NATed connection reports its own local address.
// Only for weft's iptables capture baseline; eBPF capture
// uses NodeCapture.originalDst.
Napi::Value OriginalDstSockopt(const Napi::CallbackInfo& info) {
  constexpr int kSoOriginalDst = 80;  // SO_ORIGINAL_DST == IP6T_SO_ORIGINAL_DST
  int fd = FdArg(info[0], "fd");
  sockaddr_storage local;
  socklen_t len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0)
    throw ErrnoError(info.Env(), errno, "getsockname");
  bool v6 = local.ss_family == AF_INET6 &&
            !IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
  sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  len = v6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (getsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, kSoOriginalDst, &ss, &len) != 0) {
    int err = errno;
    if (err == ENOENT) return info.Env().Null();
    throw ErrnoError(info.Env(), err, v6 ? "getsockopt(IP6T_SO_ORIGINAL_DST)" : "getsockopt(SO_ORIGINAL_DST)",
                     err == ENOPROTOOPT ? "conntrack/NAT modules are not loaded" : "");
  }
  return AddrToJs(info.Env(), ss);
}

// cgroupId(path) -> bigint: the id bpf_get_current_cgroup_id() returns for tasks in that cgroup
// (the cgroup2 file handle, which is the kernfs node id).
Napi::Value CgroupId(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info[0], "path");
  struct {
    struct file_handle fh;
    unsigned char bytes[MAX_HANDLE_SZ];
  } h;
  h.fh.handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), &h.fh, &mount_id, 0) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "name_to_handle_at " + path,
                     err == ENOENT ? "no such cgroup directory" : "");
  }
  if (h.fh.handle_bytes < 8)
    throw ErrnoError(info.Env(), EINVAL, "cgroupId " + path, "not a cgroup v2 directory");
  uint64_t id;
  memcpy(&id, h.fh.f_handle, sizeof(id));
  return Napi::BigInt::New(info.Env(), id);
}

// mountBpffs(path): mount -t bpf bpf <path> (mode 0700).
Napi::Value MountBpffs(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info[0], "path");
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0)
    throw ErrnoError(info.Env(), errno, "mount bpffs at " + path);
  return info.Env().Undefined();
}

// peerCred(fd) -> {pid, uid, gid}: SO_PEERCRED of a connected Unix socket, the credentials the
// peer had when it connected (the enrollment API admits root only, whatever the socket's mode).
Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(FdArg(info[0], "fd"), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    throw ErrnoError(info.Env(), errno, "getsockopt(SO_PEERCRED)");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("pid", static_cast<double>(cred.pid));
  o.Set("uid", static_cast<double>(cred.uid));
  o.Set("gid", static_cast<double>(cred.gid));
  return o;
}

// socketPair() -> [fd, fd]: a connected pair of Unix stream sockets (close-on-exec). The HBONE
// server hands one end to the native relay and the other to JavaScript as a net.Socket, so a
// tunnel's bytes can be read as a stream in JS.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    throw ErrnoError(info.Env(), errno, "socketpair");
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, Napi::Number::New(info.Env(), fds[0]));
  out.Set(1u, Napi::Number::New(info.Env(), fds[1]));
  return out;
}

// Handing listening sockets to the agent that replaces this one (hitless upgrade): a Unix stream
// socket carries each message as bytes with SCM_RIGHTS attached to its first byte. The kernel gives
// the fds to the read that takes that first byte and never glues two messages' fds together as long
// as the reader asks for exactly one message's bytes at a time (src/bpf/fd-passing.ts frames them).

// Most fds one sendmsg may carry (the kernel's SCM_MAX_FD).
constexpr size_t kMaxFds = 253;

// unixListen(path, backlog) -> fd: a nonblocking, close-on-exec Unix stream socket listening on
// path. Made here rather than by Node, which unlinks the path when its server closes: an agent
// handing its sockets to the next one must not take the path away from the socket it handed over.
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info[0], "path");
  int backlog = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 511;
  sockaddr_un sun{};
  if (path.size() >= sizeof(sun.sun_path)) throw ErrnoError(info.Env(), ENAMETOOLONG, "bind " + path);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw ErrnoError(info.Env(), errno, "socket(AF_UNIX)");
  if (bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0 || listen(fd, backlog) != 0) {
    int err = errno;
    ::close(fd);
    throw ErrnoError(info.Env(), err, "listen on " + path);
  }
  return Napi::Number::New(info.Env(), fd);
}

// unixConnect(path) -> fd: a blocking, close-on-exec Unix stream socket connected to path.
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info[0], "path");
  sockaddr_un sun{};
  if (path.size() >= sizeof(sun.sun_path)) throw ErrnoError(info.Env(), ENAMETOOLONG, "connect " + path);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ErrnoError(info.Env(), errno, "socket(AF_UNIX)");
  if (connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof(sun)) != 0) {
    int err = errno;
    ::close(fd);
    throw ErrnoError(info.Env(), err, "connect " + path);
  }
  return Napi::Number::New(info.Env(), fd);
}

// sendFds(fd, data, fds) -> bytes sent, -1 if the socket would block (nothing sent). fds ride on
// the first byte; a partial send (only for large data) leaves the rest to be sent without fds.
Napi::Value SendFds(const Napi::CallbackInfo& info) {
  int fd = FdArg(info[0], "fd");
  if (!info[1].IsBuffer()) throw Napi::TypeError::New(info.Env(), "data must be a Buffer");
  auto data = info[1].As<Napi::Buffer<uint8_t>>();
  if (data.Length() == 0) throw Napi::TypeError::New(info.Env(), "data must not be empty (fds ride on its first byte)");
  std::vector<int> fds;
  if (info.Length() > 2 && !info[2].IsUndefined()) {
    if (!info[2].IsArray()) throw Napi::TypeError::New(info.Env(), "fds must be an array");
    auto arr = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) fds.push_back(FdArg(arr.Get(i), "fds[]"));
  }
  if (fds.size() > kMaxFds) throw ErrnoError(info.Env(), ETOOMANYREFS, "sendmsg", "at most 253 fds per message");
  iovec iov{data.Data(), data.Length()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (fds.empty() ? 1 : fds.size())));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    throw ErrnoError(info.Env(), errno, "sendmsg(SCM_RIGHTS)");
  }
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// recvFds(fd, size, timeoutMs) -> {data, fds}: reads exactly `size` bytes (fewer only at end of
// stream), waiting at most timeoutMs in all; the fds that came with them, close-on-exec. Blocks
// the calling thread: for a process that is starting up and has nothing else to serve yet.
Napi::Value RecvFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info[0], "fd");
  int64_t size = info[1].As<Napi::Number>().Int64Value();
  int64_t timeout = info[2].As<Napi::Number>().Int64Value();
  if (size <= 0 || size > (16 << 20)) throw Napi::RangeError::New(env, "size must be 1..16 MiB");
  std::vector<uint8_t> buf(size);
  std::vector<int> fds;
  size_t got = 0;
  auto closeAll = [&fds] {
    for (int f : fds) ::close(f);
  };
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  while (got < static_cast<size_t>(size)) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t left = timeout - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
    if (left <= 0) {
      closeAll();
      throw ErrnoError(env, ETIMEDOUT, "recvmsg", "the peer sent nothing in time");
    }
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      closeAll();
      throw ErrnoError(env, err, "poll");
    }
    if (r == 0) continue;  // the deadline check above ends it
    iovec iov{buf.data() + got, static_cast<size_t>(size) - got};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n < 0) {
      int err = errno;
      closeAll();
      throw ErrnoError(env, err, "recvmsg");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* p0 = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < k; i++) {
        int f;
        memcpy(&f, p0 + i, sizeof(int));
        fds.push_back(f);
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
      closeAll();
      throw ErrnoError(env, EMSGSIZE, "recvmsg", "more fds than one message may carry");
    }
    if (n == 0) break;  // end of stream
    got += n;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", Napi::Buffer<uint8_t>::Copy(env, buf.data(), got));
  Napi::Array arr = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, fds[i]));
  o.Set("fds", arr);
  return o;
}

}  // namespace

void InitNet(Napi::Env env, Napi::Object exports) {
  exports.Set("socketInNetns", Napi::Function::New(env, SocketInNetns));
  exports.Set("socketsInNetns", Napi::Function::New(env, SocketsInNetns));
  exports.Set("dialSocketsInNetns", Napi::Function::New(env, DialSocketsInNetns));
  exports.Set("socketNetnsCookie", Napi::Function::New(env, SocketNetnsCookie));
  exports.Set("sockName", Napi::Function::New(env, SockName));
  exports.Set("connectFd", Napi::Function::New(env, ConnectFd));
  exports.Set("originalDstSockopt", Napi::Function::New(env, OriginalDstSockopt));
  exports.Set("cgroupId", Napi::Function::New(env, CgroupId));
  exports.Set("mountBpffs", Napi::Function::New(env, MountBpffs));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen));
  exports.Set("sendFds", Napi::Function::New(env, SendFds));
  exports.Set("recvFds", Napi::Function::New(env, RecvFds));
}

}  // namespace weft
