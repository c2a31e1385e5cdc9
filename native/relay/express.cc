// Reused inbound decisions (express.h): each pod's supply of sockets and dial settings, the state
// generation, and the JavaScript calls that fill them.
#include "express.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <deque>
#include <unordered_map>

#include "registry.h"
#include "relay.h"
#include "session.h"

namespace weft::relay {
namespace {

struct Pod {
  uint32_t id;
  uint32_t max_dials;
  uint64_t timeout_ms;
  size_t low;  // below this many of a family, JavaScript is asked for more (`xlow`)
  std::deque<int> fds[2];  // [0] IPv4, [1] IPv6
  bool asked[2] = {false, false};
};

// Relay thread only.
std::unordered_map<uint32_t, Pod*>& g_pods = *new std::unordered_map<uint32_t, Pod*>();
uint64_t g_generation = 0;
std::atomic<size_t> g_fds{0};
uint32_t g_next_pod = 1;  // JavaScript thread only

void AskMore(Pod* p, int fam) {
  if (p->asked[fam]) return;
  p->asked[fam] = true;
  Event ev{"xlow", p->id};
  ev.n1 = fam == 0 ? 4 : 6;
  ev.n2 = static_cast<double>(p->fds[fam].size());
  Emit(std::move(ev));
}

void Release(Pod* p) {
  for (auto& q : p->fds)
    for (int fd : q) {
      ::close(fd);
      g_fds--;
    }
  delete p;
}


// expressPod(maxDials, timeoutMs, low) → pod number.
Napi::Value NewPod(const Napi::CallbackInfo& info) {
  if (!Started()) throw Napi::Error::New(info.Env(), "weft relay: init() first");
  auto max_dials = static_cast<uint32_t>(WholeNumber(info[0], "expressPod maxDials", 1, 4294967295.0));
  auto timeout = static_cast<uint64_t>(WholeNumber(info[1], "expressPod timeoutMs", 0, 9007199254740991.0));
  auto low = static_cast<size_t>(WholeNumber(info[2], "expressPod low", 0, 65536));
  uint32_t id = g_next_pod++;
  Post([=] { g_pods[id] = new Pod{id, max_dials, timeout, low}; });
  return Napi::Number::New(info.Env(), id);
}

// expressSupply(pod, family, fds): the fds (unconnected TCP sockets) are the relay's from this call
// on, closed on every path, a thrown argument error included.
Napi::Value Supply(const Napi::CallbackInfo& info) {
  std::vector<int> fds;
  if (info[2].IsArray()) {
    Napi::Array a = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value v = a.Get(i);
      if (v.IsNumber() && v.As<Napi::Number>().Int64Value() >= 0) fds.push_back(v.As<Napi::Number>().Int32Value());
    }
  }
  try {
    if (!info[2].IsArray()) throw Napi::TypeError::New(info.Env(), "weft relay: expressSupply fds must be an array");
    uint32_t pod = static_cast<uint32_t>(WholeNumber(info[0], "expressSupply pod", 1, 4294967295.0));
    double family = WholeNumber(info[1], "expressSupply family", 4, 6);
    if (family == 5) throw Napi::TypeError::New(info.Env(), "weft relay: expressSupply family must be 4 or 6");
    int fam = family == 4 ? 0 : 1;
    g_fds += fds.size();
    Post([pod, fam, fds] {
      auto it = g_pods.find(pod);
      if (it == g_pods.end()) {
        for (int fd : fds) {
          ::close(fd);
          g_fds--;
        }
        return;
      }
      for (int fd : fds) it->second->fds[fam].push_back(fd);
      it->second->asked[fam] = false;
    });
  } catch (...) {
    for (int fd : fds) ::close(fd);
    throw;
  }
  return info.Env().Undefined();
}

// expressRelease(pod): its sockets are closed; its sessions' grants match nothing from then on.
Napi::Value ReleasePod(const Napi::CallbackInfo& info) {
  uint32_t pod = static_cast<uint32_t>(WholeNumber(info[0], "expressRelease pod", 1, 4294967295.0));
  Post([pod] {
    auto it = g_pods.find(pod);
    if (it == g_pods.end()) return;
    Pod* p = it->second;
    g_pods.erase(it);
    Release(p);
  });
  return info.Env().Undefined();
}

// expressGeneration(n): grants of any other generation no longer match.
Napi::Value Generation(const Napi::CallbackInfo& info) {
  if (!Started()) throw Napi::Error::New(info.Env(), "weft relay: init() first");
  auto gen = static_cast<uint64_t>(WholeNumber(info[0], "expressGeneration", 0, 9007199254740991.0));
  Post([gen] { g_generation = gen; });
  return info.Env().Undefined();
}

// grant(session, authority, generation, tag, address, port).
Napi::Value GrantCall(const Napi::CallbackInfo& info) {
  uint32_t sid = static_cast<uint32_t>(WholeNumber(info[0], "grant session", 1, 4294967295.0));
  if (!info[1].IsString()) throw Napi::TypeError::New(info.Env(), "weft relay: grant authority must be a string");
  std::string authority = info[1].As<Napi::String>().Utf8Value();
  ExpressGrant g;
  g.generation = static_cast<uint64_t>(WholeNumber(info[2], "grant generation", 0, 9007199254740991.0));
  g.tag = static_cast<uint32_t>(WholeNumber(info[3], "grant tag", 1, 4294967295.0));
  if (!info[4].IsString()) throw Napi::TypeError::New(info.Env(), "weft relay: grant address must be a string");
  std::string address = info[4].As<Napi::String>().Utf8Value();
  auto port = static_cast<uint16_t>(WholeNumber(info[5], "grant port", 1, 65535));
  if (!ParseSockaddr(address, port, &g.addr, &g.len))
    throw Napi::TypeError::New(info.Env(), "weft relay: grant address must be an IP literal, not " + address);
  g.target = address + ":" + std::to_string(port);
  Post([sid, authority = std::move(authority), g = std::move(g)] {
    if (Session* s = FindSession(sid)) s->Grant(authority, g);
  });
  return info.Env().Undefined();
}

}  // namespace

double WholeNumber(const Napi::Value& v, const char* what, double lo, double hi) {
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
  if (!(d >= lo && d <= hi) || d != std::floor(d))
    throw Napi::TypeError::New(v.Env(), std::string("weft relay: ") + what + " must be a whole number from " +
                                            std::to_string(int64_t(lo)) + " to " + std::to_string(int64_t(hi)) +
                                            ", not " + v.ToString().Utf8Value());
  return d;
}

bool ParseSockaddr(const std::string& address, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
  *ss = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(ss);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof(sockaddr_in);
    return true;
  }
  if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// The next socket of `family` (AF_INET or AF_INET6) in p's supply, or -1; asks for more when low.
static int TakeFd(Pod* p, int family) {
  int fam = family == AF_INET ? 0 : 1;
  auto& q = p->fds[fam];
  if (q.empty()) {
    AskMore(p, fam);
    return -1;
  }
  int fd = q.front();
  q.pop_front();
  g_fds--;
  if (q.size() < p->low) AskMore(p, fam);
  return fd;
}

int ExpressTake(uint32_t pod, const ExpressGrant& g, uint32_t connecting, uint64_t* timeout_ms) {
  if (g.generation != g_generation) return -1;
  auto it = g_pods.find(pod);
  if (it == g_pods.end()) return -1;
  Pod* p = it->second;
  if (connecting >= p->max_dials) return -1;  // JavaScript answers it as the cap says (503)
  *timeout_ms = p->timeout_ms;
  return TakeFd(p, g.addr.ss_family);
}

int ExpressSpare(uint32_t pod, int family) {
  auto it = g_pods.find(pod);
  return it == g_pods.end() ? -1 : TakeFd(it->second, family);
}

size_t ExpressFds() { return g_fds.load(); }

uint64_t ExpressGenerationNow() { return g_generation; }

void RegisterExpress(Napi::Env env, Napi::Object exports) {
  exports.Set("expressPod", Napi::Function::New(env, NewPod));
  exports.Set("expressSupply", Napi::Function::New(env, Supply));
  exports.Set("expressRelease", Napi::Function::New(env, ReleasePod));
  exports.Set("expressGeneration", Napi::Function::New(env, Generation));
  exports.Set("grant", Napi::Function::New(env, GrantCall));
}

}  // namespace weft::relay
