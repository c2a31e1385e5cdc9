// The relay thread's registry (registry.h): live sessions by number, the counts, and what waits to
// be freed.
#include "registry.h"

#include <atomic>
#include <unordered_map>
#include <vector>

#include "pipe.h"

namespace weft::relay {
namespace {

// Relay-thread state; allocated once and never freed, so nothing is destroyed under the thread at exit.
auto& g_sessions = *new std::unordered_map<uint32_t, Session*>();
auto& g_dead_sessions = *new std::vector<Session*>();
auto& g_dead_streams = *new std::vector<Stream*>();
std::atomic<size_t> g_session_count{0}, g_streams{0};

}  // namespace

Session* FindSession(uint32_t id) {
  auto it = g_sessions.find(id);
  return it == g_sessions.end() ? nullptr : it->second;
}

void AddSession(uint32_t id, int fd, SSL_CTX* ctx, bool server, const std::string& identity, const Settings& cfg) {
  auto* s = new Session(id, fd, ctx, server, identity, cfg);
  g_sessions[id] = s;
  g_session_count++;
  s->Handshake();  // registered first: a failure here already reports under this id
}

void RetireSession(Session* s) {
  g_sessions.erase(s->id);
  g_session_count--;
  g_dead_sessions.push_back(s);
}

void CountStream() { g_streams++; }

void RetireStream(Stream* st) {
  g_streams--;
  g_dead_streams.push_back(st);
}

void Reap() {
  ReapPipes();
  for (Stream* st : g_dead_streams) delete st;
  g_dead_streams.clear();
  for (Session* s : g_dead_sessions) delete s;
  g_dead_sessions.clear();
}

size_t SessionCount() { return g_session_count; }
size_t StreamCount() { return g_streams; }

}  // namespace weft::relay
