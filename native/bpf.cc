// bpf(2) through libbpf: load objects, create/detach links, pin/get, map access, feature probes.
// Objects are loaded, their program and map fds duplicated, and the libbpf object closed at once,
// so JavaScript only ever holds plain fds (closed with fs.closeSync) and no native handle can leak.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <mutex>
#include <unordered_map>
#include <cstdarg>
#include <cstring>
#include <memory>
#include <vector>

#include "common.h"

namespace weft {
namespace {

// libbpf reports details (including the verifier log) through its print callback; while a call
// runs we collect them so a failure can carry them as error.verifierLog.
std::string g_log;
bool g_capture = false;
bool g_debug = false;

int PrintCb(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (!g_capture || (level == LIBBPF_DEBUG && !g_debug)) return 0;
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::string s(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(s.data(), s.size(), fmt, args);
  s.resize(static_cast<size_t>(n));
  g_log += s;
  return 0;
}

struct LogCapture {
  explicit LogCapture(bool debug) {
    g_log.clear();
    g_capture = true;
    g_debug = debug;
  }
  ~LogCapture() { g_capture = false; }
};

int DupFd(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 3); }

Napi::Buffer<uint8_t> BufArg(const Napi::Value& v, const char* name) {
  if (!v.IsBuffer()) throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a Buffer");
  return v.As<Napi::Buffer<uint8_t>>();
}

uint32_t U32Arg(const Napi::Value& v, const char* name) {
  // Range-checked here: Uint32Value() would silently wrap 2^32 + 4 to 4, and NaN to 0.
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= UINT32_MAX) || d != static_cast<double>(static_cast<uint32_t>(d)))
    throw Napi::TypeError::New(v.Env(), std::string(name) + " must be an integer in [0, 2^32)");
  return static_cast<uint32_t>(d);
}

const char* OrEmpty(const char* s) { return s ? s : ""; }

// Owns a libbpf object for the duration of a call: any throw (a bad argument from JavaScript, a
// failed syscall, a failing Napi call) closes it, and with it every fd libbpf holds for it.
struct ObjectCloser {
  void operator()(struct bpf_object* o) const { bpf_object__close(o); }
};
using ObjectPtr = std::unique_ptr<struct bpf_object, ObjectCloser>;

// Fds about to be handed to JavaScript: closed on unwind unless the result was built.
class FdGuard {
 public:
  FdGuard() = default;
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  ~FdGuard() {
    for (int fd : fds_) close(fd);
  }
  int Add(int fd) {
    fds_.push_back(fd);
    return fd;
  }
  void Release() { fds_.clear(); }

 private:
  std::vector<int> fds_;
};

// loadObject(path, { pinRoot?, reuseMaps?: {name: fd}, debug? })
//   -> { programs: {name: {fd, type, typeName, attachType, attachTypeName, section}},
//        maps: {name: {fd, type, typeName, keySize, valueSize, maxEntries, pinPath}}, log }
// Maps declared with LIBBPF_PIN_BY_NAME are reused from / pinned to pinRoot.
Napi::Value LoadObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = StringArg(info[0], "path");
  Napi::Object opts = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
  std::string pinRoot = opts.Has("pinRoot") && opts.Get("pinRoot").IsString()
                            ? opts.Get("pinRoot").As<Napi::String>().Utf8Value()
                            : "";
  bool debug = opts.Has("debug") && opts.Get("debug").ToBoolean();
  LogCapture capture(debug);

  struct bpf_object_open_opts oo;
  memset(&oo, 0, sizeof(oo));
  oo.sz = sizeof(oo);
  if (!pinRoot.empty()) oo.pin_root_path = pinRoot.c_str();
  ObjectPtr obj(bpf_object__open_file(path.c_str(), &oo));
  if (!obj) {
    int err = errno;
    Napi::Error e = ErrnoError(env, err, "open BPF object " + path,
                               err == ENOENT ? "object file missing: run make build" : "");
    e.Set("verifierLog", Napi::String::New(env, g_log));
    throw e;
  }
  // obj is closed by its owner on every throw, including ones from argument conversion below.
  auto fail = [&](int err, const std::string& what, const std::string& hint = "") {
    Napi::Error e = ErrnoError(env, err, what, hint);
    e.Set("verifierLog", Napi::String::New(env, g_log));
    throw e;
  };

  if (opts.Has("reuseMaps") && opts.Get("reuseMaps").IsObject()) {
    Napi::Object reuse = opts.Get("reuseMaps").As<Napi::Object>();
    Napi::Array names = reuse.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).ToString().Utf8Value();
      int fd = FdArg(reuse.Get(name), ("reuseMaps." + name).c_str());
      struct bpf_map* m = bpf_object__find_map_by_name(obj.get(), name.c_str());
      if (!m) fail(ENOENT, "reuse map " + name, "the object has no map of that name");
      if (bpf_map__reuse_fd(m, fd) != 0) fail(errno, "reuse map " + name);
    }
  }

  if (bpf_object__load(obj.get()) != 0) {
    int err = errno;
    fail(err, "load BPF object " + path,
         err == EACCES || err == EINVAL ? "the verifier rejected a program: see error.verifierLog"
                                        : "");
  }

  Napi::Object result = Napi::Object::New(env);
  Napi::Object progs = Napi::Object::New(env);
  Napi::Object maps = Napi::Object::New(env);
  FdGuard dups;
  auto dupOrFail = [&](int fd, const std::string& what) {
    int d = DupFd(fd);
    if (d < 0) fail(errno, "dup fd of " + what);
    return dups.Add(d);
  };
  struct bpf_program* prog;
  bpf_object__for_each_program(prog, obj.get()) {
    Napi::Object p = Napi::Object::New(env);
    std::string name = bpf_program__name(prog);
    p.Set("fd", dupOrFail(bpf_program__fd(prog), "program " + name));
    p.Set("type", static_cast<double>(bpf_program__type(prog)));
    p.Set("typeName", OrEmpty(libbpf_bpf_prog_type_str(bpf_program__type(prog))));
    p.Set("attachType", static_cast<double>(bpf_program__expected_attach_type(prog)));
    p.Set("attachTypeName",
          OrEmpty(libbpf_bpf_attach_type_str(bpf_program__expected_attach_type(prog))));
    p.Set("section", OrEmpty(bpf_program__section_name(prog)));
    progs.Set(name, p);
  }
  struct bpf_map* map;
  bpf_object__for_each_map(map, obj.get()) {
    if (bpf_map__is_internal(map)) continue;  // .rodata/.bss: not for JavaScript
    Napi::Object m = Napi::Object::New(env);
    std::string name = bpf_map__name(map);
    m.Set("fd", dupOrFail(bpf_map__fd(map), "map " + name));
    m.Set("type", static_cast<double>(bpf_map__type(map)));
    m.Set("typeName", OrEmpty(libbpf_bpf_map_type_str(bpf_map__type(map))));
    m.Set("keySize", bpf_map__key_size(map));
    m.Set("valueSize", bpf_map__value_size(map));
    m.Set("maxEntries", bpf_map__max_entries(map));
    if (bpf_map__pin_path(map)) m.Set("pinPath", bpf_map__pin_path(map));
    maps.Set(name, m);
  }
  result.Set("programs", progs);
  result.Set("maps", maps);
  result.Set("log", g_log);
  dups.Release();  // JavaScript owns them now
  return result;
}

// linkCreate(progFd, targetFd, attachType) -> link fd. Target: a cgroup directory fd for cgroup
// programs, a netns fd for sk_lookup.
Napi::Value LinkCreate(const Napi::CallbackInfo& info) {
  int prog = FdArg(info[0], "progFd");
  int target = FdArg(info[1], "targetFd");
  uint32_t type = U32Arg(info[2], "attachType");
  int fd = bpf_link_create(prog, target, static_cast<enum bpf_attach_type>(type), nullptr);
  if (fd < 0) {
    int err = errno;
    std::string hint;
    if (err == EBADF) hint = "the target must be an open cgroup v2 directory or netns file";
    if (err == EINVAL) hint = "program and attach type do not match, or the target is the wrong kind";
    throw ErrnoError(info.Env(), err,
                     std::string("bpf_link_create ") + OrEmpty(libbpf_bpf_attach_type_str(
                                                            static_cast<enum bpf_attach_type>(type))),
                     hint);
  }
  return Napi::Number::New(info.Env(), fd);
}

// linkDetach(linkFd): detaches the program now, even if the link is pinned or held elsewhere.
Napi::Value LinkDetach(const Napi::CallbackInfo& info) {
  if (bpf_link_detach(FdArg(info[0], "linkFd")) != 0)
    throw ErrnoError(info.Env(), errno, "bpf_link_detach");
  return info.Env().Undefined();
}

Napi::Value ObjPin(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info[1], "path");
  if (bpf_obj_pin(FdArg(info[0], "fd"), path.c_str()) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "bpf_obj_pin " + path,
                     err == EEXIST ? "something is already pinned there; unpin it first"
                     : err == ENOENT || err == EPERM
                         ? "the directory must exist on a bpffs mount (mount -t bpf bpf /sys/fs/bpf)"
                         : "");
  }
  return info.Env().Undefined();
}

Napi::Value ObjGet(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info[0], "path");
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, "bpf_obj_get " + path,
                     err == ENOENT ? "nothing pinned there (was bpffs remounted or the pin removed?)"
                                   : "");
  }
  return Napi::Number::New(info.Env(), fd);
}

template <typename T>
T GetInfo(const Napi::CallbackInfo& info, const char* what) {
  T out;
  memset(&out, 0, sizeof(out));
  __u32 len = sizeof(out);
  if (bpf_obj_get_info_by_fd(FdArg(info[0], "fd"), &out, &len) != 0) {
    int err = errno;
    throw ErrnoError(info.Env(), err, std::string("bpf_obj_get_info_by_fd (") + what + ")",
                     err == EINVAL ? std::string("the fd is not a BPF ") + what : "");
  }
  return out;
}

Napi::Value MapInfo(const Napi::CallbackInfo& info) {
  auto mi = GetInfo<struct bpf_map_info>(info, "map");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", mi.id);
  o.Set("name", mi.name);
  o.Set("type", mi.type);
  o.Set("typeName", OrEmpty(libbpf_bpf_map_type_str(static_cast<enum bpf_map_type>(mi.type))));
  o.Set("keySize", mi.key_size);
  o.Set("valueSize", mi.value_size);
  o.Set("maxEntries", mi.max_entries);
  o.Set("flags", mi.map_flags);
  return o;
}

Napi::Value ProgInfo(const Napi::CallbackInfo& info) {
  auto pi = GetInfo<struct bpf_prog_info>(info, "program");
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("id", pi.id);
  o.Set("name", pi.name);
  o.Set("type", pi.type);
  o.Set("typeName", OrEmpty(libbpf_bpf_prog_type_str(static_cast<enum bpf_prog_type>(pi.type))));
  return o;
}

Napi::Value LinkInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto li = GetInfo<struct bpf_link_info>(info, "link");
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", li.id);
  o.Set("type", li.type);
  o.Set("typeName", OrEmpty(libbpf_bpf_link_type_str(static_cast<enum bpf_link_type>(li.type))));
  o.Set("progId", li.prog_id);
  if (li.type == BPF_LINK_TYPE_CGROUP) {
    o.Set("cgroupId", Napi::BigInt::New(env, static_cast<uint64_t>(li.cgroup.cgroup_id)));
    o.Set("attachType", li.cgroup.attach_type);
  } else if (li.type == BPF_LINK_TYPE_NETNS) {
    o.Set("netnsIno", li.netns.netns_ino);
    o.Set("attachType", li.netns.attach_type);
  }
  return o;
}

// Map access over raw Buffers; src/bpf/maps.ts encodes and decodes typed keys and values.
// The kernel copies exactly the map's own key and value sizes to and from user memory, so a Buffer
// of any other length would be read or written out of bounds: every call checks the lengths
// against the map itself (one BPF_OBJ_GET_INFO_BY_FD), never against sizes JavaScript passes.
struct MapShape {
  std::string name;
  uint32_t keySize;
  uint32_t valueSize;  // what one lookup copies: per-CPU maps hold one 8-byte aligned slot per CPU
};

bool IsPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

MapShape MapShapeOf(Napi::Env env, int fd) {
  // BPF_OBJ_GET_INFO_BY_FD also answers for programs and links (with another struct), so the fd's
  // file kind is checked first.
  char link[64] = "";
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(proc.c_str(), link, sizeof(link) - 1);
  if (n < 0) {
    int err = errno;
    throw ErrnoError(env, err == ENOENT ? EBADF : err, "BPF map access",
                     "mapFd " + std::to_string(fd) + " is not an open file descriptor");
  }
  link[n] = '\0';
  if (strcmp(link, "anon_inode:bpf-map") != 0)
    throw ErrnoError(env, EINVAL, "BPF map access",
                     "mapFd " + std::to_string(fd) + " is not a BPF map (" + link + ")");
  struct bpf_map_info mi;
  memset(&mi, 0, sizeof(mi));
  __u32 len = sizeof(mi);
  if (bpf_obj_get_info_by_fd(fd, &mi, &len) != 0)
    throw ErrnoError(env, errno, "bpf_obj_get_info_by_fd (map)");
  MapShape s{mi.name, mi.key_size, mi.value_size};
  if (IsPerCpu(mi.type)) {
    int cpus = libbpf_num_possible_cpus();
    if (cpus < 0) throw ErrnoError(env, -cpus, "libbpf_num_possible_cpus");
    s.valueSize = ((mi.value_size + 7) / 8) * 8 * static_cast<uint32_t>(cpus);
  }
  return s;
}

// Throws a RangeError (no errno: callers retrying on EINVAL must not retry this) naming the map.
void CheckSize(Napi::Env env, const MapShape& m, const char* what, size_t got, uint32_t want) {
  if (got == want) return;
  throw Napi::RangeError::New(env, std::string(what) + " is " + std::to_string(got) + " bytes; BPF map " +
                                       m.name + " has " + std::to_string(want) + "-byte " + what +
                                       "s (does the codec match bpf/include?)");
}

// A map handle: the map checked once (MapShapeOf's readlink and BPF_OBJ_GET_INFO_BY_FD), then used
// through a duplicate of its fd that only this registry holds, so its number cannot come to mean
// another file while the handle lives. The checks cost two syscalls per access, the larger share
// of taking a captured connection's original destination (one lookup-and-delete per connection).
struct MapRef {
  int fd;
  MapShape shape;
};

std::mutex g_handles_mu;  // the addon may be loaded in worker threads too
std::unordered_map<uint32_t, MapRef> g_handles;
uint32_t g_next_handle = 1;

uint32_t HandleArg(Napi::Env env, const Napi::Value& v) {
  if (!v.IsNumber()) throw Napi::TypeError::New(env, "map handle must be a number from mapHandle()");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 1 && d < 4294967296.0 && d == std::floor(d))) throw Napi::TypeError::New(env, "map handle must be a number from mapHandle()");
  return static_cast<uint32_t>(d);
}

MapRef HandleRef(Napi::Env env, const Napi::Value& v) {
  uint32_t h = HandleArg(env, v);
  std::lock_guard<std::mutex> lock(g_handles_mu);
  auto it = g_handles.find(h);
  if (it == g_handles.end()) throw Napi::Error::New(env, "unknown BPF map handle " + std::to_string(h) + " (released?)");
  return it->second;
}

// The map an access goes to: a raw fd (checked on every call) or a handle (checked when made).
MapRef Target(const Napi::CallbackInfo& info, bool handle) {
  if (handle) return HandleRef(info.Env(), info[0]);
  int fd = FdArg(info[0], "mapFd");
  return MapRef{fd, MapShapeOf(info.Env(), fd)};
}

// mapHandle(fd) -> handle: checks fd is a BPF map and keeps a duplicate of it until mapRelease.
Napi::Value MapHandle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = FdArg(info[0], "mapFd");
  MapShape shape = MapShapeOf(env, fd);
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) throw ErrnoError(env, errno, "fcntl(F_DUPFD_CLOEXEC) of BPF map " + shape.name);
  std::lock_guard<std::mutex> lock(g_handles_mu);
  uint32_t h = g_next_handle++;
  g_handles[h] = MapRef{dup, shape};
  return Napi::Number::New(env, h);
}

// mapRelease(handle) -> whether it was live; closes the handle's duplicate fd.
Napi::Value MapRelease(const Napi::CallbackInfo& info) {
  uint32_t h = HandleArg(info.Env(), info[0]);
  int fd = -1;
  {
    std::lock_guard<std::mutex> lock(g_handles_mu);
    auto it = g_handles.find(h);
    if (it != g_handles.end()) {
      fd = it->second.fd;
      g_handles.erase(it);
    }
  }
  if (fd >= 0) close(fd);
  return Napi::Boolean::New(info.Env(), fd >= 0);
}

Napi::Value Lookup(const Napi::CallbackInfo& info, bool handle) {
  Napi::Env env = info.Env();
  MapRef t = Target(info, handle);
  const MapShape& m = t.shape;
  auto key = BufArg(info[1], "key");
  uint32_t vsize = U32Arg(info[2], "valueSize");
  bool del = info.Length() > 3 && info[3].ToBoolean();
  CheckSize(env, m, "key", key.Length(), m.keySize);
  CheckSize(env, m, "value", vsize, m.valueSize);
  auto out = Napi::Buffer<uint8_t>::New(env, m.valueSize);
  int rc = del ? bpf_map_lookup_and_delete_elem(t.fd, key.Data(), out.Data())
               : bpf_map_lookup_elem(t.fd, key.Data(), out.Data());
  if (rc != 0) {
    int err = errno;
    if (err == ENOENT) return env.Null();
    throw ErrnoError(env, err, del ? "bpf_map_lookup_and_delete_elem" : "bpf_map_lookup_elem");
  }
  return out;
}

Napi::Value Update(const Napi::CallbackInfo& info, bool handle) {
  Napi::Env env = info.Env();
  MapRef t = Target(info, handle);
  const MapShape& m = t.shape;
  auto key = BufArg(info[1], "key");
  auto value = BufArg(info[2], "value");
  uint64_t flags = 0;
  if (info.Length() > 3 && !info[3].IsUndefined()) flags = U32Arg(info[3], "flags");
  CheckSize(env, m, "key", key.Length(), m.keySize);
  CheckSize(env, m, "value", value.Length(), m.valueSize);
  if (bpf_map_update_elem(t.fd, key.Data(), value.Data(), flags) != 0) {
    int err = errno;
    throw ErrnoError(env, err, "bpf_map_update_elem",
                     err == E2BIG ? "the map is full" : err == EEXIST ? "the key exists (BPF_NOEXIST)" : "");
  }
  return env.Undefined();
}

Napi::Value Delete(const Napi::CallbackInfo& info, bool handle) {
  Napi::Env env = info.Env();
  MapRef t = Target(info, handle);
  auto key = BufArg(info[1], "key");
  CheckSize(env, t.shape, "key", key.Length(), t.shape.keySize);
  if (bpf_map_delete_elem(t.fd, key.Data()) != 0) {
    int err = errno;
    if (err == ENOENT) return Napi::Boolean::New(env, false);
    throw ErrnoError(env, err, "bpf_map_delete_elem");
  }
  return Napi::Boolean::New(env, true);
}

// mapNextKey(fd, key | null, keySize) -> next key Buffer, or null at the end.
Napi::Value NextKey(const Napi::CallbackInfo& info, bool handle) {
  Napi::Env env = info.Env();
  MapRef t = Target(info, handle);
  const MapShape& m = t.shape;
  if (!info[1].IsNull() && !info[1].IsUndefined() && !info[1].IsBuffer())
    throw Napi::TypeError::New(env, "key must be a Buffer, or null for the first key");
  uint32_t ksize = U32Arg(info[2], "keySize");
  CheckSize(env, m, "key", ksize, m.keySize);
  const void* cur = nullptr;
  if (info[1].IsBuffer()) {
    auto k = info[1].As<Napi::Buffer<uint8_t>>();
    CheckSize(env, m, "key", k.Length(), m.keySize);
    cur = k.Data();
  }
  auto out = Napi::Buffer<uint8_t>::New(env, m.keySize);
  if (bpf_map_get_next_key(t.fd, cur, out.Data()) != 0) {
    int err = errno;
    if (err == ENOENT) return env.Null();
    throw ErrnoError(env, err, "bpf_map_get_next_key");
  }
  return out;
}

Napi::Value MapLookup(const Napi::CallbackInfo& info) { return Lookup(info, false); }
Napi::Value MapUpdate(const Napi::CallbackInfo& info) { return Update(info, false); }
Napi::Value MapDelete(const Napi::CallbackInfo& info) { return Delete(info, false); }
Napi::Value MapNextKey(const Napi::CallbackInfo& info) { return NextKey(info, false); }
Napi::Value HandleLookup(const Napi::CallbackInfo& info) { return Lookup(info, true); }
Napi::Value HandleUpdate(const Napi::CallbackInfo& info) { return Update(info, true); }
Napi::Value HandleDelete(const Napi::CallbackInfo& info) { return Delete(info, true); }
Napi::Value HandleNextKey(const Napi::CallbackInfo& info) { return NextKey(info, true); }

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) throw ErrnoError(info.Env(), -n, "libbpf_num_possible_cpus");
  return Napi::Number::New(info.Env(), n);
}

// ---- feature probe ----

// Loads "call <helper>?; r0 = 1; exit" as the given program type; returns the fd or -errno.
int ProbeLoad(enum bpf_prog_type type, enum bpf_attach_type attach, int helper, std::string* log) {
  struct bpf_insn insns[3];
  memset(insns, 0, sizeof(insns));
  int n = 0;
  if (helper >= 0) {
    insns[n].code = BPF_JMP | BPF_CALL;
    insns[n].imm = helper;
    n++;
  }
  insns[n].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[n].dst_reg = BPF_REG_0;
  insns[n].imm = 1;
  n++;
  insns[n].code = BPF_JMP | BPF_EXIT;
  n++;
  char buf[4096] = "";
  struct bpf_prog_load_opts po;
  memset(&po, 0, sizeof(po));
  po.sz = sizeof(po);
  po.expected_attach_type = attach;
  po.log_buf = buf;
  po.log_size = sizeof(buf);
  po.log_level = helper >= 0 ? 1 : 0;
  int fd = bpf_prog_load(type, "weft_probe", "GPL", insns, n, &po);
  if (log) *log = buf;
  return fd < 0 ? -errno : fd;
}

// libbpf 1.1's libbpf_probe_bpf_helper() reports every helper as present on kernels >= 6.x
// because it does not know the newer "program of this type cannot use helper" message; this probe
// recognises all three rejection messages. Argument errors mean the helper exists and is allowed.
bool ProbeHelper(enum bpf_prog_type type, enum bpf_attach_type attach, int helper) {
  std::string log;
  int fd = ProbeLoad(type, attach, helper, &log);
  if (fd >= 0) {
    close(fd);
    return true;
  }
  if (fd == -EPERM) return false;
  return log.find("unknown func") == std::string::npos && log.find("invalid func") == std::string::npos &&
         log.find("cannot use helper") == std::string::npos;
}

// An attach type works through BPF links if a program of it loads and BPF_LINK_CREATE on an
// invalid target fails with EBADF (the kernel got as far as resolving the target).
bool ProbeLink(enum bpf_prog_type type, enum bpf_attach_type attach) {
  int fd = ProbeLoad(type, attach, -1, nullptr);
  if (fd < 0) return false;
  int l = bpf_link_create(fd, -1, attach, nullptr);
  int err = errno;
  if (l >= 0) close(l);
  close(fd);
  return l < 0 && err == EBADF;
}

Napi::Value Probe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  LogCapture capture(false);  // silence libbpf warnings from probes
  Napi::Object r = Napi::Object::New(env);

  Napi::Object progs = Napi::Object::New(env);
  for (auto t : {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_PROG_TYPE_SOCK_OPS, BPF_PROG_TYPE_SK_LOOKUP})
    progs.Set(libbpf_bpf_prog_type_str(t), libbpf_probe_bpf_prog_type(t, nullptr) == 1);
  r.Set("progTypes", progs);

  Napi::Object maps = Napi::Object::New(env);
  for (auto t : {BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_SK_STORAGE,
                 BPF_MAP_TYPE_SOCKMAP})
    maps.Set(libbpf_bpf_map_type_str(t), libbpf_probe_bpf_map_type(t, nullptr) == 1);
  r.Set("mapTypes", maps);

  struct {
    enum bpf_prog_type type;
    enum bpf_attach_type attach;
  } links[] = {
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_CONNECT},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_GETPEERNAME},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET6_GETPEERNAME},
      {BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS},
      {BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP},
  };
  Napi::Object attach = Napi::Object::New(env);
  for (auto& l : links) attach.Set(libbpf_bpf_attach_type_str(l.attach), ProbeLink(l.type, l.attach));
  r.Set("linkAttachTypes", attach);

  struct {
    enum bpf_prog_type type;
    enum bpf_attach_type attach;
    int helper;
    const char* name;
  } helpers[] = {
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, BPF_FUNC_get_netns_cookie, "get_netns_cookie"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, BPF_FUNC_get_current_cgroup_id,
       "get_current_cgroup_id"},
      {BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT, BPF_FUNC_sk_storage_get, "sk_storage_get"},
      {BPF_PROG_TYPE_SOCK_OPS, BPF_CGROUP_SOCK_OPS, BPF_FUNC_sk_storage_get, "sk_storage_get"},
      {BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP, BPF_FUNC_sk_assign, "sk_assign"},
      {BPF_PROG_TYPE_SK_LOOKUP, BPF_SK_LOOKUP, BPF_FUNC_sk_release, "sk_release"},
  };
  Napi::Object h = Napi::Object::New(env);
  for (auto& x : helpers)
    h.Set(std::string(libbpf_bpf_prog_type_str(x.type)) + "/" + x.name,
          ProbeHelper(x.type, x.attach, x.helper));
  r.Set("helpers", h);
  return r;
}

}  // namespace

void InitBpf(Napi::Env env, Napi::Object exports) {
  libbpf_set_print(PrintCb);
  exports.Set("loadObject", Napi::Function::New(env, LoadObject));
  exports.Set("linkCreate", Napi::Function::New(env, LinkCreate));
  exports.Set("linkDetach", Napi::Function::New(env, LinkDetach));
  exports.Set("objPin", Napi::Function::New(env, ObjPin));
  exports.Set("objGet", Napi::Function::New(env, ObjGet));
  exports.Set("mapInfo", Napi::Function::New(env, MapInfo));
  exports.Set("progInfo", Napi::Function::New(env, ProgInfo));
  exports.Set("linkInfo", Napi::Function::New(env, LinkInfo));
  exports.Set("mapLookup", Napi::Function::New(env, MapLookup));
  exports.Set("mapUpdate", Napi::Function::New(env, MapUpdate));
  exports.Set("mapDelete", Napi::Function::New(env, MapDelete));
  exports.Set("mapNextKey", Napi::Function::New(env, MapNextKey));
  exports.Set("mapHandle", Napi::Function::New(env, MapHandle));
  exports.Set("mapRelease", Napi::Function::New(env, MapRelease));
  exports.Set("handleLookup", Napi::Function::New(env, HandleLookup));
  exports.Set("handleUpdate", Napi::Function::New(env, HandleUpdate));
  exports.Set("handleDelete", Napi::Function::New(env, HandleDelete));
  exports.Set("handleNextKey", Napi::Function::New(env, HandleNextKey));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus));
  exports.Set("probe", Napi::Function::New(env, Probe));
}

}  // namespace weft
