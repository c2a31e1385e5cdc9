// weft_native: the thin native layer of weft. It does what JavaScript cannot: bpf(2) through
// libbpf (load, attach, pin, map access, feature probes), setns(2) for sockets in a pod's network
// namespace, and a few socket/cgroup syscalls. No policy, caching or long-lived threads live here;
// src/bpf/ is the only caller.
#include <malloc.h>
#include <string.h>

#include "common.h"

namespace weft {

std::string CommonHint(int err) {
  switch (err) {
    case EPERM:
    case EACCES:
      return "run as root (needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN)";
    case ENOSYS:
      return "the kernel lacks this feature; run the weft feature probe";
    default:
      return "";
  }
}

Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what, const std::string& hint) {
  const char* name = strerrorname_np(err);
  std::string code = name ? name : "E" + std::to_string(err);
  std::string msg = what + ": " + strerror(err) + " (" + code + ")";
  std::string h = hint.empty() ? CommonHint(err) : hint;
  if (!h.empty()) msg += "; " + h;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, code));
  e.Set("syscall", Napi::String::New(env, what));
  return e;
}

int FdArg(const Napi::Value& v, const char* name) {
  if (!v.IsNumber() || v.As<Napi::Number>().Int64Value() < 0 ||
      v.As<Napi::Number>().Int64Value() > INT32_MAX)
    throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a file descriptor (integer >= 0)");
  return v.As<Napi::Number>().Int32Value();
}

std::string StringArg(const Napi::Value& v, const char* name) {
  if (!v.IsString()) throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace weft

// glibc's free() gives memory back only from the top of a heap; malloc_trim(0) also returns the
// free pages inside every arena. True if anything was returned. (Not glibc: nothing to do.)
static Napi::Value MallocTrim(const Napi::CallbackInfo& info) {
#ifdef __GLIBC__
  return Napi::Boolean::New(info.Env(), malloc_trim(0) == 1);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  weft::InitBpf(env, exports);
  weft::InitNet(env, exports);
  exports.Set("mallocTrim", Napi::Function::New(env, MallocTrim));
  return exports;
}

NODE_API_MODULE(weft_native, Init)
