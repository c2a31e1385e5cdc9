// weft_relay's JavaScript surface (src/agent/proxy/hbone/native/addon.ts is the typed wrapper).
// Sessions and contexts are numbers; file descriptors passed in are duplicated, so the caller's
// socket object can be closed as usual once a call succeeds.
#include <fcntl.h>
#include <unistd.h>

#include "relay.h"

namespace weft::relay {
namespace {

napi_env g_env = nullptr;
Napi::FunctionReference g_dispatch;
Napi::AsyncContext* g_async = nullptr;
std::vector<Event> g_events;
int g_depth = 0;
bool g_draining = false;
uv_timer_t* g_drain_timer = nullptr;
std::unordered_map<uint32_t, SSL_CTX*> g_contexts;
uint32_t g_next_ctx = 1;

void Drain() {
  if (g_draining || g_events.empty() || !g_env) return;
  g_draining = true;
  Napi::Env env(g_env);
  Napi::HandleScope scope(env);
  while (!g_events.empty()) {
    std::vector<Event> batch;
    batch.swap(g_events);
    for (Event& e : batch) {
      Napi::HandleScope inner(env);
      Napi::Array list = Napi::Array::New(env, e.list.size());
      for (size_t i = 0; i < e.list.size(); i++) list.Set(i, Napi::String::New(env, e.list[i]));
      try {
        g_dispatch.MakeCallback(env.Global(),
                                {Napi::String::New(env, e.type), Napi::Number::New(env, e.session),
                                 Napi::Number::New(env, e.stream), Napi::Number::New(env, e.n1),
                                 Napi::Number::New(env, e.n2), Napi::Number::New(env, e.n3),
                                 Napi::String::New(env, e.text), list},
                                *g_async);
      } catch (const Napi::Error& err) {
        napi_fatal_exception(g_env, err.Value());
      }
    }
  }
  g_draining = false;
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

Settings ParseSettings(const Napi::Value& v) {
  Settings s;
  if (!v.IsObject()) return s;
  Napi::Object o = v.As<Napi::Object>();
  auto num = [&](const char* k, auto& field) {
    Napi::Value x = o.Get(k);
    if (x.IsNumber()) field = static_cast<std::remove_reference_t<decltype(field)>>(x.As<Napi::Number>().Int64Value());
  };
  num("streamWindow", s.stream_window);
  num("connectionWindow", s.connection_window);
  num("maxFrameSize", s.max_frame);
  num("maxStreams", s.max_streams);
  num("pingIntervalMs", s.ping_interval_ms);
  num("pingTimeoutMs", s.ping_timeout_ms);
  num("connectTimeoutMs", s.connect_timeout_ms);
  return s;
}

SSL_CTX* Ctx(const Napi::Value& v) {
  auto it = g_contexts.find(U32(v, "context"));
  if (it == g_contexts.end()) throw Napi::Error::New(v.Env(), "unknown TLS context");
  return it->second;
}

Session* Sess(const Napi::Value& v) { return FindSession(U32(v, "session")); }

Napi::Value Init(const Napi::CallbackInfo& info) {
  if (!info[0].IsFunction()) throw Napi::TypeError::New(info.Env(), "dispatch must be a function");
  g_env = info.Env();
  g_dispatch = Napi::Persistent(info[0].As<Napi::Function>());
  if (!g_async) g_async = new Napi::AsyncContext(info.Env(), "weft.relay");
  if (!g_drain_timer) {
    g_drain_timer = static_cast<uv_timer_t*>(calloc(1, sizeof(uv_timer_t)));
    uv_timer_init(uv_default_loop(), g_drain_timer);
    uv_unref(reinterpret_cast<uv_handle_t*>(g_drain_timer));
  }
  return info.Env().Undefined();
}

Napi::Value Context(const Napi::CallbackInfo& info) {
  std::string err;
  SSL_CTX* ctx = NewContext(Str(info[0], "key"), Str(info[1], "certChain"), Str(info[2], "root"),
                            info[3].ToBoolean().Value(), &err);
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
  Entry guard(true);
  SSL_CTX* ctx = Ctx(info[1]);
  std::string identity = Str(info[2], server ? "trustDomain" : "identity");
  Settings cfg = ParseSettings(info[3]);
  int fd = DupFd(info[0], "fd");
  return Napi::Number::New(info.Env(), AddSession(fd, ctx, server, identity, cfg));
}

Napi::Value Client(const Napi::CallbackInfo& info) { return Open(info, false); }
Napi::Value Serve(const Napi::CallbackInfo& info) { return Open(info, true); }

Napi::Value Request(const Napi::CallbackInfo& info) {
  Entry guard(true);
  Session* s = Sess(info[0]);
  if (!info[1].IsArray()) throw Napi::TypeError::New(info.Env(), "headers must be an array");
  Napi::Array a = info[1].As<Napi::Array>();
  std::vector<std::string> headers;
  for (uint32_t i = 0; i < a.Length(); i++) headers.push_back(a.Get(i).ToString().Utf8Value());
  return Napi::Number::New(info.Env(), s ? s->Request(headers) : -1);
}

Napi::Value WithFd(const Napi::CallbackInfo& info, bool respond) {
  Entry guard(true);
  Session* s = Sess(info[0]);
  int32_t stream = info[1].As<Napi::Number>().Int32Value();
  int status = respond ? info[2].As<Napi::Number>().Int32Value() : 200;
  Napi::Value fdv = info[respond ? 3 : 2];
  int fd = status == 200 ? DupFd(fdv, "fd") : -1;
  bool ok = s && (respond ? s->Respond(stream, status, fd) : s->Attach(stream, fd));
  if (!ok && fd >= 0) close(fd);
  return Napi::Boolean::New(info.Env(), ok);
}

Napi::Value Respond(const Napi::CallbackInfo& info) { return WithFd(info, true); }
Napi::Value Attach(const Napi::CallbackInfo& info) { return WithFd(info, false); }

Napi::Value Cancel(const Napi::CallbackInfo& info) {
  Entry guard(true);
  if (Session* s = Sess(info[0])) s->Cancel(info[1].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

Napi::Value CloseSession(const Napi::CallbackInfo& info) {
  Entry guard(true);
  if (Session* s = Sess(info[0])) s->Close(info[1].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value Stats(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("sessions", Napi::Number::New(info.Env(), SessionCount()));
  o.Set("streams", Napi::Number::New(info.Env(), StreamCount()));
  o.Set("contexts", Napi::Number::New(info.Env(), g_contexts.size()));
  return o;
}

}  // namespace

void Emit(Event e) { g_events.push_back(std::move(e)); }

Entry::Entry(bool from_js) : from_js_(from_js) { g_depth++; }

Entry::~Entry() {
  if (--g_depth > 0) return;
  Reap();
  if (g_events.empty()) return;
  if (from_js_ || g_draining) {
    // Never inside a call JavaScript made: it would hear of a stream before it knows the id.
    uv_timer_start(g_drain_timer, [](uv_timer_t*) {
      Entry guard(false);
    }, 0, 0);
    return;
  }
  Drain();
  Reap();
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
  exports.Set("attach", Napi::Function::New(env, Attach));
  exports.Set("cancel", Napi::Function::New(env, Cancel));
  exports.Set("close", Napi::Function::New(env, CloseSession));
  exports.Set("stats", Napi::Function::New(env, Stats));
  return exports;
}

NODE_API_MODULE(weft_relay, InitModule)
