// Outbound decisions reused on the relay thread (express_out.h): the capture map lookup, the
// listeners' grants and the CONNECT opened from one.
#include "express_out.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "express.h"
#include "registry.h"
#include "session.h"

// The kernel's own code for an operation a map type lacks (not in the C library's errno.h).
#ifndef ENOTSUPP
#define ENOTSUPP 524
#endif

namespace weft::relay {
namespace {

// bpf/include/weft_maps.h: struct weft_endpoint, weft_peer_key and weft_orig, byte for byte.
struct BpfEndpoint {
  uint8_t addr[16];
  uint16_t port;  // host order
  uint8_t family;
  uint8_t pad;
};
struct PeerKey {
  uint64_t netns_cookie;
  BpfEndpoint client;
  uint32_t pad;
};
struct Orig {
  BpfEndpoint dst;
  uint32_t flags;
  uint64_t netns_cookie;
  uint64_t cgroup_id;
};
static_assert(sizeof(PeerKey) == 32 && sizeof(Orig) == 40, "must match bpf/include/weft_maps.h");

struct OutGrant {
  uint64_t generation;
  uint32_t tag;
  uint32_t session;
  uint32_t max_streams;
  std::string authority, fwd_prefix, fwd_suffix;
  std::vector<std::string> extra;  // name/value flat, after forwarded
};

struct OutListener {
  uint64_t netns_cookie;
  std::unordered_map<std::string, OutGrant> grants;  // by Key(original destination)
};

// Relay thread only.
int g_map_fd = -1;  // the node's weft_orig_dst
std::unordered_map<uint32_t, OutListener>& g_out = *new std::unordered_map<uint32_t, OutListener>();

// An endpoint as a map key: family, 16 address bytes (IPv4 in the first 4), port.
std::string Key(uint8_t family, const uint8_t* addr, uint16_t port) {
  std::string k(19, '\0');
  k[0] = static_cast<char>(family);
  memcpy(&k[1], addr, family == AF_INET ? 4 : 16);
  k[17] = static_cast<char>(port >> 8);
  k[18] = static_cast<char>(port & 0xff);
  return k;
}

// A v4-mapped IPv6 endpoint as the IPv4 one (the capture's keys and JavaScript's addresses unmap it).
void Unmap(BpfEndpoint* e) {
  static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (e->family != AF_INET6 || memcmp(e->addr, kMapped, 12) != 0) return;
  memmove(e->addr, e->addr + 12, 4);
  memset(e->addr + 4, 0, 12);
  e->family = AF_INET;
}

long Bpf(int cmd, union bpf_attr* attr) { return syscall(__NR_bpf, cmd, attr, sizeof(*attr)); }

// Looks the connection up and deletes its entry, as JavaScript's BpfMap.take does.
bool TakeOrig(const PeerKey& key, Orig* out) {
  union bpf_attr a;
  memset(&a, 0, sizeof(a));
  a.map_fd = static_cast<uint32_t>(g_map_fd);
  a.key = reinterpret_cast<uint64_t>(&key);
  a.value = reinterpret_cast<uint64_t>(out);
  if (Bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &a) == 0) return true;
  if (errno != EINVAL && errno != ENOTSUPP && errno != EOPNOTSUPP) return false;
  if (Bpf(BPF_MAP_LOOKUP_ELEM, &a) != 0) return false;  // a kernel without lookup-and-delete on LRU maps
  a.value = 0;
  Bpf(BPF_MAP_DELETE_ELEM, &a);
  return true;
}

// "00-<trace id>-<span id>-01", a new sampled trace, as src/agent/proxy/outbound/traceparent.ts.
std::string Traceparent() {
  static uint8_t pool[4096];
  static size_t used = sizeof(pool);
  static const char kHex[] = "0123456789abcdef";
  if (used + 24 > sizeof(pool)) {
    RAND_bytes(pool, sizeof(pool));
    used = 0;
  }
  std::string t = "00-";
  for (size_t i = 0; i < 24; i++) {
    if (i == 16) t += '-';
    t += kHex[pool[used + i] >> 4];
    t += kHex[pool[used + i] & 15];
  }
  used += 24;
  t += "-01";
  return t;
}

uint32_t U32Arg(const Napi::Value& v, const char* what, double lo = 1) {
  return static_cast<uint32_t>(WholeNumber(v, what, lo, 4294967295.0));
}

std::string StrArg(const Napi::Value& v, const char* what) {
  if (!v.IsString()) throw Napi::TypeError::New(v.Env(), std::string("weft relay: ") + what + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// outboundMap(fd): the capture's original-destination map (duplicated; -1 forgets it).
Napi::Value OutboundMap(const Napi::CallbackInfo& info) {
  if (!Started()) throw Napi::Error::New(info.Env(), "weft relay: init() first");
  int fd = -1;
  if (!(info[0].IsNumber() && info[0].As<Napi::Number>().Int32Value() == -1)) {
    int given = static_cast<int>(WholeNumber(info[0], "outboundMap fd", 0, 2147483647.0));
    fd = fcntl(given, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) throw Napi::Error::New(info.Env(), std::string("weft relay: outboundMap: dup: ") + strerror(errno));
  }
  Post([fd] {
    if (g_map_fd >= 0) ::close(g_map_fd);
    g_map_fd = fd;
  });
  return info.Env().Undefined();
}

// outboundExpress(listener, netnsCookie): connections accepted on `listener` come from the pod netns
// with that cookie, and may be opened on its grants.
Napi::Value OutboundExpress(const Napi::CallbackInfo& info) {
  if (!Started()) throw Napi::Error::New(info.Env(), "weft relay: init() first");
  uint32_t listener = U32Arg(info[0], "outboundExpress listener");
  if (!info[1].IsBigInt()) throw Napi::TypeError::New(info.Env(), "weft relay: outboundExpress netnsCookie must be a bigint");
  bool lossless = false;
  uint64_t cookie = info[1].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::TypeError::New(info.Env(), "weft relay: outboundExpress netnsCookie must fit 64 bits");
  Post([listener, cookie] { g_out[listener].netns_cookie = cookie; });
  return info.Env().Undefined();
}

// outGrant(listener, address, port, generation, tag, session, maxStreams, authority, forwardedPrefix,
// forwardedSuffix, headers): a later connection on `listener` to address:port is a CONNECT on
// `session` with `authority`, a forwarded header of prefix + the app's source port + suffix, then
// `headers` (name/value flat) and a new traceparent.
Napi::Value OutGrantCall(const Napi::CallbackInfo& info) {
  uint32_t listener = U32Arg(info[0], "outGrant listener");
  std::string address = StrArg(info[1], "outGrant address");
  auto port = static_cast<uint16_t>(WholeNumber(info[2], "outGrant port", 1, 65535));
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (!ParseSockaddr(address, port, &ss, &len))
    throw Napi::TypeError::New(info.Env(), "weft relay: outGrant address must be an IP literal, not " + address);
  OutGrant g;
  g.generation = static_cast<uint64_t>(WholeNumber(info[3], "outGrant generation", 0, 9007199254740991.0));
  g.tag = U32Arg(info[4], "outGrant tag");
  g.session = U32Arg(info[5], "outGrant session");
  g.max_streams = U32Arg(info[6], "outGrant maxStreams");
  g.authority = StrArg(info[7], "outGrant authority");
  g.fwd_prefix = StrArg(info[8], "outGrant forwardedPrefix");
  g.fwd_suffix = StrArg(info[9], "outGrant forwardedSuffix");
  if (!info[10].IsArray()) throw Napi::TypeError::New(info.Env(), "weft relay: outGrant headers must be an array");
  Napi::Array a = info[10].As<Napi::Array>();
  if (a.Length() % 2 != 0) throw Napi::TypeError::New(info.Env(), "weft relay: outGrant headers must be name/value pairs");
  for (uint32_t i = 0; i < a.Length(); i++) g.extra.push_back(StrArg(a.Get(i), "outGrant header"));
  BpfEndpoint e{};
  if (ss.ss_family == AF_INET) {
    memcpy(e.addr, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr, 4);
    e.family = AF_INET;
  } else {
    memcpy(e.addr, &reinterpret_cast<sockaddr_in6*>(&ss)->sin6_addr, 16);
    e.family = AF_INET6;
    Unmap(&e);
  }
  std::string key = Key(e.family, e.addr, port);
  Post([listener, key = std::move(key), g = std::move(g)]() mutable {
    auto it = g_out.find(listener);
    if (it == g_out.end()) return;  // never enabled, or stopped meanwhile
    auto& grants = it->second.grants;
    if (grants.size() >= kMaxOutGrants && grants.find(key) == grants.end()) return;
    grants[key] = std::move(g);
  });
  return info.Env().Undefined();
}

void Format(const BpfEndpoint& e, std::string* address, std::string* port) {
  char buf[INET6_ADDRSTRLEN] = "";
  inet_ntop(e.family == AF_INET ? AF_INET : AF_INET6, e.addr, buf, sizeof(buf));
  *address = buf;
  *port = std::to_string(e.port);
}

}  // namespace

bool ExpressOutbound(uint32_t listener, int fd, const sockaddr_storage& peer, Event* accept) {
  auto it = g_out.find(listener);
  if (it == g_out.end() || g_map_fd < 0) return false;
  PeerKey key{};
  key.netns_cookie = it->second.netns_cookie;
  uint16_t client_port = 0;
  if (peer.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&peer);
    memcpy(key.client.addr, &a->sin_addr, 4);
    key.client.family = AF_INET;
    client_port = ntohs(a->sin_port);
  } else if (peer.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&peer);
    memcpy(key.client.addr, &a->sin6_addr, 16);
    key.client.family = AF_INET6;
    client_port = ntohs(a->sin6_port);
    Unmap(&key.client);
  } else {
    return false;
  }
  key.client.port = client_port;
  Orig orig{};
  if (!TakeOrig(key, &orig)) return false;  // not captured: JavaScript finds nothing either
  Unmap(&orig.dst);
  std::string orig_addr, orig_port;
  Format(orig.dst, &orig_addr, &orig_port);
  accept->list = {orig_addr, orig_port};  // from here on the map has no entry: JavaScript needs it
  auto g = it->second.grants.find(Key(orig.dst.family, orig.dst.addr, orig.dst.port));
  if (g == it->second.grants.end() || g->second.generation != ExpressGenerationNow()) return false;
  Session* s = FindSession(g->second.session);
  if (!s || s->dead()) return false;
  const OutGrant& gr = g->second;
  std::vector<std::string> headers = {":method", "CONNECT", ":authority", gr.authority, "forwarded",
                                      gr.fwd_prefix + std::to_string(client_port) + gr.fwd_suffix};
  headers.insert(headers.end(), gr.extra.begin(), gr.extra.end());
  headers.push_back("traceparent");
  headers.push_back(Traceparent());
  uint32_t handle = NextStreamHandle();
  if (!s->RequestOut(handle, headers, fd, gr.max_streams, listener)) return false;
  // Before the stream's first frame goes out: JavaScript hears `xout` before its `response` or `done`.
  Event ev{"xout", listener, static_cast<int32_t>(handle)};
  ev.n1 = gr.tag;
  ev.n2 = gr.session;
  ev.n3 = client_port;
  ev.text = accept->text;
  ev.list = std::move(accept->list);
  Emit(std::move(ev));
  s->Flush();
  return true;
}

void ForgetOutbound(uint32_t listener) { g_out.erase(listener); }

void RegisterExpressOut(Napi::Env env, Napi::Object exports) {
  exports.Set("outboundMap", Napi::Function::New(env, OutboundMap));
  exports.Set("outboundExpress", Napi::Function::New(env, OutboundExpress));
  exports.Set("outGrant", Napi::Function::New(env, OutGrantCall));
}

}  // namespace weft::relay
