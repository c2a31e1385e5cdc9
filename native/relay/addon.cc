// weft_relay's JavaScript surface (src/hbone/native/addon.ts is the typed wrapper).
// Calls check their arguments, duplicate the file descriptors they are given (so the caller's
// socket object can be closed as usual; respondDial alone takes its fd over) and hand the work to
// the relay thread; they never wait for it. Sessions and client streams get their numbers here, so
// a call can return one at once.
#include <arpa/inet.h>
#include <fcntl.h>
#include <napi.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "express.h"
#include "express_out.h"
#include "listener.h"
#include "pipe.h"
#include "registry.h"
#include "relay.h"
#include "session.h"
#include "tls.h"

namespace weft::relay {
namespace {

// Never freed: the relay thread may still be running while the process exits.
struct Shared {
  std::mutex mu;
  std::vector<std::function<void()>> commands;  // to the relay thread
  std::vector<Event> events;                    // to the JavaScript thread
  uv_loop_t loop;
  uv_async_t wake_relay;
  uv_async_t wake_js;
  uv_prepare_t flush_before_poll;
  uv_check_t flush_after_poll;
};
Shared* g = nullptr;

napi_env g_env = nullptr;
Napi::FunctionReference* g_dispatch = nullptr;
Napi::AsyncContext* g_async = nullptr;
int g_depth = 0;  // relay thread only
std::unordered_map<uint32_t, SSL_CTX*> g_contexts;  // JavaScript thread only
uint32_t g_next_ctx = 1;
std::string* g_ciphers = nullptr;  // TLS 1.3 cipher suites for new contexts, from init(); JavaScript thread only
std::atomic<uint32_t> g_next_session{1}, g_next_stream{1};

// Wake-ups are coalesced, one per batch each way: a wake-up is a write(2) on an eventfd, and on a
// busy machine the thread it wakes often preempts the one that woke it. The relay thread wakes
// JavaScript once per loop iteration, after its I/O callbacks (or before it polls again), not once
// per event; JavaScript wakes the relay once per batch of events it handles, not once per call.
thread_local bool t_relay_thread = false;  // set on the relay thread alone
bool g_js_wake_due = false;                // relay thread only
thread_local bool t_delivering = false;    // the JavaScript thread is handling a batch of events
thread_local bool t_relay_wake_due = false;

void FlushJsWake() {
  if (!g_js_wake_due) return;
  g_js_wake_due = false;
  uv_async_send(&g->wake_js);
}

void RunCommands(uv_async_t*) {
  Entry guard;
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(g->mu);
    batch.swap(g->commands);
  }
  for (auto& fn : batch) fn();
}

void DeliverEvents(uv_async_t*) {
  std::vector<Event> batch;
  {
    std::lock_guard<std::mutex> lock(g->mu);
    batch.swap(g->events);
  }
  Napi::Env env(g_env);
  Napi::HandleScope scope(env);
  t_delivering = true;
  for (Event& e : batch) {
    Napi::HandleScope inner(env);
    Napi::Array list = Napi::Array::New(env, e.list.size());
    for (size_t i = 0; i < e.list.size(); i++) list.Set(i, Napi::String::New(env, e.list[i]));
    try {
      g_dispatch->MakeCallback(env.Global(),
                               {Napi::String::New(env, e.type), Napi::Number::New(env, e.session),
                                Napi::Number::New(env, e.stream), Napi::Number::New(env, e.n1),
                                Napi::Number::New(env, e.n2), Napi::Number::New(env, e.n3),
                                Napi::String::New(env, e.text), list},
                               *g_async);
    } catch (const Napi::Error& err) {
      napi_fatal_exception(g_env, err.Value());
    }
  }
  t_delivering = false;
  if (t_relay_wake_due) {
    t_relay_wake_due = false;
    uv_async_send(&g->wake_relay);
  }
}

int DupFd(const Napi::Value& v, const char* name) {
  if (!v.IsNumber() || v.As<Napi::Number>().Int64Value() < 0)
    throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a file descriptor");
  int fd = fcntl(v.As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 3);
  if (fd < 0) throw Napi::Error::New(v.Env(), std::string("dup ") + name + ": " + strerror(errno));
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

uint32_t U32(const Napi::Value& v, const char* name) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a number");
  return v.As<Napi::Number>().Uint32Value();
}

std::string Str(const Napi::Value& v, const char* name) {
  if (!v.IsString()) throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// The session's numbers, every one required (the relay keeps no defaults: settings.ts is their one
// source) and within what HTTP/2 allows; anything else is a TypeError naming the field.
Settings ParseSettings(const Napi::Value& v) {
  if (!v.IsObject()) throw Napi::TypeError::New(v.Env(), "weft relay: settings must be an object");
  Napi::Object o = v.As<Napi::Object>();
  // Window, frame and count fields are whole numbers; milliseconds are truncated, as they always were.
  auto num = [&](const char* k, auto& field, double lo, double hi, bool whole) {
    Napi::Value x = o.Get(k);
    double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : NAN;
    if (!std::isfinite(d) || d < lo || d > hi || (whole && d != std::floor(d)))
      throw Napi::TypeError::New(v.Env(), std::string("weft relay: settings.") + k + " must be a" +
                                              (whole ? " whole" : "") + " number from " + std::to_string(int64_t(lo)) +
                                              " to " + std::to_string(int64_t(hi)) + ", not " +
                                              x.ToString().Utf8Value());
    field = static_cast<std::remove_reference_t<decltype(field)>>(static_cast<int64_t>(d));
  };
  constexpr double kU32 = 4294967295.0, kMs = 9007199254740991.0;  // 2^32 - 1, 2^53 - 1
  constexpr double kFrameMin = 16384, kFrameMax = 16777215;         // RFC 9113 §6.5.2
  Settings s;
  num("streamWindow", s.stream_window, 0, NGHTTP2_MAX_WINDOW_SIZE, true);
  num("connectionWindow", s.connection_window, 0, NGHTTP2_MAX_WINDOW_SIZE, true);
  num("maxFrameSize", s.max_frame, kFrameMin, kFrameMax, true);
  num("maxStreams", s.max_streams, 0, kU32, true);
  num("maxHeaderListSize", s.max_header_list, 0, kU32, true);
  num("pingIntervalMs", s.ping_interval_ms, 0, kMs, false);
  num("pingTimeoutMs", s.ping_timeout_ms, 0, kMs, false);
  num("connectTimeoutMs", s.connect_timeout_ms, 0, kMs, false);
  return s;
}

void NeedInit(Napi::Env env) {
  if (!g_dispatch) throw Napi::Error::New(env, "weft relay: init() first");
}

// Runs fn on the relay thread with the session, if it still exists.
void WithSession(uint32_t sid, std::function<void(Session*)> fn) {
  Post([sid, fn = std::move(fn)] {
    if (Session* s = FindSession(sid)) fn(s);
  });
}

// init(dispatch, tls): tls.ciphers (settings.ts's TLS_CIPHERS) is required, as session settings are.
Napi::Value Init(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "dispatch must be a function");
  if (!info[1].IsObject()) throw Napi::TypeError::New(info.Env(), "weft relay: tls must be an object");
  std::string ciphers = Str(info[1].As<Napi::Object>().Get("ciphers"), "weft relay: tls.ciphers");
  if (g_dispatch) {
    // A module system that loads the wrapper again (test isolation) in the same thread: new dispatcher.
    if (info.Env() != g_env) throw Napi::Error::New(info.Env(), "weft relay: one JavaScript thread per process");
    g_dispatch->Reset(info[0].As<Napi::Function>(), 1);
    *g_ciphers = std::move(ciphers);
    return info.Env().Undefined();
  }
  g_ciphers = new std::string(std::move(ciphers));
  g_env = info.Env();
  g_dispatch = new Napi::FunctionReference(Napi::Persistent(info[0].As<Napi::Function>()));
  g_async = new Napi::AsyncContext(info.Env(), "weft.relay");
  g = new Shared();
  uv_loop_t* js_loop;
  napi_get_uv_event_loop(g_env, &js_loop);
  uv_async_init(js_loop, &g->wake_js, DeliverEvents);
  uv_unref(reinterpret_cast<uv_handle_t*>(&g->wake_js));  // sockets and servers keep the process alive, not this
  uv_loop_init(&g->loop);
  uv_async_init(&g->loop, &g->wake_relay, RunCommands);
  uv_prepare_init(&g->loop, &g->flush_before_poll);
  // Sessions first: what they send may end streams, and JavaScript hears of it in the same wake.
  uv_prepare_start(&g->flush_before_poll, [](uv_prepare_t*) {
    Entry guard;
    FlushSessions();
    FlushJsWake();
  });
  uv_check_init(&g->loop, &g->flush_after_poll);
  uv_check_start(&g->flush_after_poll, [](uv_check_t*) {
    Entry guard;
    FlushSessions();
    FlushJsWake();
  });
  std::thread([] {
    pthread_setname_np(pthread_self(), "weft-relay");  // so per-thread CPU (top -H, /proc/*/task) names it
    t_relay_thread = true;
    uv_run(&g->loop, UV_RUN_DEFAULT);
  }).detach();
  return info.Env().Undefined();
}

Napi::Value Context(const Napi::CallbackInfo& info) {
  NeedInit(info.Env());
  std::string err;
  SSL_CTX* ctx = NewContext(Str(info[0], "key"), Str(info[1], "certChain"), Str(info[2], "root"),
                            info[3].ToBoolean().Value(), *g_ciphers, &err);
  if (!ctx) throw Napi::Error::New(info.Env(), "TLS credentials: " + err);
  uint32_t id = g_next_ctx++;
  g_contexts[id] = ctx;
  return Napi::Number::New(info.Env(), id);
}

Napi::Value FreeContext(const Napi::CallbackInfo& info) {
  auto it = g_contexts.find(U32(info[0], "context"));
  if (it != g_contexts.end()) {
    SSL_CTX_free(it->second);  // sessions made from it hold their own reference
    g_contexts.erase(it);
  }
  return info.Env().Undefined();
}

Napi::Value Open(const Napi::CallbackInfo& info, bool server) {
  NeedInit(info.Env());
  auto it = g_contexts.find(U32(info[1], "context"));
  if (it == g_contexts.end()) throw Napi::Error::New(info.Env(), "unknown TLS context");
  std::string identity = Str(info[2], server ? "trustDomain" : "identity");
  Settings cfg = ParseSettings(info[3]);
  int fd = DupFd(info[0], "fd");
  SSL_CTX* ctx = it->second;
  SSL_CTX_up_ref(ctx);  // until the session has made its SSL from it
  // serve(fd, ctx, trustDomain, settings, expressPod?): the pod whose supply grants dial from.
  uint32_t pod = server && info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Uint32Value() : 0;
  uint32_t id = g_next_session++;
  Post([=] {
    AddSession(id, fd, ctx, server, identity, cfg);
    SSL_CTX_free(ctx);
    if (pod)
      if (Session* s = FindSession(id)) s->SetExpressPod(pod);
  });
  return Napi::Number::New(info.Env(), id);
}

Napi::Value Client(const Napi::CallbackInfo& info) { return Open(info, false); }
Napi::Value Serve(const Napi::CallbackInfo& info) { return Open(info, true); }

Napi::Value Request(const Napi::CallbackInfo& info) {
  uint32_t sid = U32(info[0], "session");
  if (!info[1].IsArray()) throw Napi::TypeError::New(info.Env(), "headers must be an array");
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<std::string> headers;
  for (uint32_t i = 0; i < a.Length(); i++) headers.push_back(a.Get(i).ToString().Utf8Value());
  // The app's socket, when JavaScript has it already: duplicated now, attached by the relay on 200.
  int fd = info.Length() > 2 && !info[2].IsUndefined() ? DupFd(info[2], "fd") : -1;
  uint32_t handle = NextStreamHandle();
  Post([sid, handle, fd, headers = std::move(headers)] {
    if (Session* s = FindSession(sid)) {
      s->Request(handle, headers, fd);
    } else {
      if (fd >= 0) close(fd);  // only our duplicate, as on every path short of a 200
      Event ev{"done", sid, static_cast<int32_t>(handle)};
      ev.list.push_back(std::to_string(NGHTTP2_REFUSED_STREAM));
      Emit(std::move(ev));
    }
  });
  return Napi::Number::New(info.Env(), handle);
}

Napi::Value Respond(const Napi::CallbackInfo& info) {
  uint32_t sid = U32(info[0], "session"), stream = U32(info[1], "stream");
  int status = static_cast<int>(U32(info[2], "status"));
  int fd = status == 200 ? DupFd(info[3], "fd") : -1;
  Post([=] {
    if (Session* s = FindSession(sid)) s->Respond(stream, status, fd);
    else if (fd >= 0) close(fd);
  });
  return info.Env().Undefined();
}

// respondDial(session, stream, fd, address, port, timeoutMs): fd, an unconnected socket, is the
// relay's from this call on (not duplicated: one syscall less per connection), so it is closed on
// every path where it is not relayed, a thrown argument error included.
Napi::Value RespondDial(const Napi::CallbackInfo& info) {
  int fd = -1;
  if (info[2].IsNumber() && info[2].As<Napi::Number>().Int64Value() >= 0) fd = info[2].As<Napi::Number>().Int32Value();
  try {
    uint32_t sid = U32(info[0], "session"), stream = U32(info[1], "stream");
    if (fd < 0) throw Napi::TypeError::New(info.Env(), "weft relay: respondDial fd must be a file descriptor");
    std::string address = Str(info[3], "weft relay: respondDial address");
    double port = info[4].IsNumber() ? info[4].As<Napi::Number>().DoubleValue() : NAN;
    if (!(port >= 1 && port <= 65535 && port == std::floor(port)))
      throw Napi::TypeError::New(info.Env(), "weft relay: respondDial port must be a whole number from 1 to 65535, not " +
                                                 info[4].ToString().Utf8Value());
    double timeout = info[5].IsNumber() ? info[5].As<Napi::Number>().DoubleValue() : NAN;
    if (!(std::isfinite(timeout) && timeout >= 0 && timeout <= 9007199254740991.0))
      throw Napi::TypeError::New(info.Env(), "weft relay: respondDial timeoutMs must be a number of milliseconds, not " +
                                                 info[5].ToString().Utf8Value());
    sockaddr_storage ss{};
    socklen_t len;
    if (!ParseSockaddr(address, static_cast<uint16_t>(port), &ss, &len))
      throw Napi::TypeError::New(info.Env(), "weft relay: respondDial address must be an IP literal, not " + address);
    std::string target = address + ":" + std::to_string(static_cast<int>(port));
    auto ms = static_cast<uint64_t>(timeout);
    Post([=] {
      if (Session* s = FindSession(sid)) s->RespondDial(stream, fd, ss, len, target, ms);
      else close(fd);
    });
  } catch (...) {
    if (fd >= 0) close(fd);
    throw;
  }
  return info.Env().Undefined();
}

Napi::Value Attach(const Napi::CallbackInfo& info) {
  uint32_t sid = U32(info[0], "session"), stream = U32(info[1], "stream");
  int fd = DupFd(info[2], "fd");
  Post([=] {
    if (Session* s = FindSession(sid)) {
      s->Attach(stream, fd);
    } else {
      linger l{1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      close(fd);
    }
  });
  return info.Env().Undefined();
}

Napi::Value Pipe(const Napi::CallbackInfo& info) {
  NeedInit(info.Env());
  int a = DupFd(info[0], "fd");
  int b;
  try {
    b = DupFd(info[1], "fd");
  } catch (...) {
    close(a);
    throw;
  }
  uint32_t id = g_next_session++;
  Post([=] { StartPipe(id, a, b); });
  return Napi::Number::New(info.Env(), id);
}

Napi::Value Cancel(const Napi::CallbackInfo& info) {
  uint32_t stream = U32(info[1], "stream");
  WithSession(U32(info[0], "session"), [stream](Session* s) { s->Cancel(stream); });
  return info.Env().Undefined();
}

Napi::Value CloseSession(const Napi::CallbackInfo& info) {
  bool graceful = info[1].ToBoolean().Value();
  WithSession(U32(info[0], "session"), [graceful](Session* s) { s->Close(graceful); });
  return info.Env().Undefined();
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("sessions", Napi::Number::New(info.Env(), SessionCount()));
  o.Set("streams", Napi::Number::New(info.Env(), StreamCount()));
  o.Set("contexts", Napi::Number::New(info.Env(), g_contexts.size()));
  o.Set("expressFds", Napi::Number::New(info.Env(), ExpressFds()));
  return o;
}

}  // namespace

uv_loop_t* Loop() { return &g->loop; }

bool Started() { return g != nullptr; }

uint32_t NextStreamHandle() { return g_next_stream++; }

size_t QueuedEvents() {
  std::lock_guard<std::mutex> lock(g->mu);
  return g->events.size();
}

void Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(g->mu);
    g->commands.push_back(std::move(fn));
  }
  if (t_delivering) t_relay_wake_due = true;  // sent once the batch is handled
  else uv_async_send(&g->wake_relay);
}

void Emit(Event e) {
  {
    std::lock_guard<std::mutex> lock(g->mu);
    g->events.push_back(std::move(e));
  }
  if (t_relay_thread) g_js_wake_due = true;  // sent by the loop's prepare or check handle
  else uv_async_send(&g->wake_js);
}

Entry::Entry() { g_depth++; }

Entry::~Entry() {
  if (--g_depth == 0) Reap();
}

}  // namespace weft::relay

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  using namespace weft::relay;
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("context", Napi::Function::New(env, Context));
  exports.Set("freeContext", Napi::Function::New(env, FreeContext));
  exports.Set("client", Napi::Function::New(env, Client));
  exports.Set("serve", Napi::Function::New(env, Serve));
  exports.Set("request", Napi::Function::New(env, Request));
  exports.Set("respond", Napi::Function::New(env, Respond));
  exports.Set("respondDial", Napi::Function::New(env, RespondDial));
  exports.Set("attach", Napi::Function::New(env, Attach));
  exports.Set("cancel", Napi::Function::New(env, Cancel));
  exports.Set("pipe", Napi::Function::New(env, Pipe));
  exports.Set("close", Napi::Function::New(env, CloseSession));
  exports.Set("stats", Napi::Function::New(env, Stats));
  RegisterListener(env, exports);
  RegisterExpress(env, exports);
  RegisterExpressOut(env, exports);
  return exports;
}

NODE_API_MODULE(weft_relay, InitModule)
