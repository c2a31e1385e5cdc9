// Listening sockets polled on the relay thread (listener.cc): a captured connection is accepted
// there and reaches JavaScript as a file descriptor with its peer, never as a Node socket, so a new
// connection costs no JS object until JavaScript has decided what to do with it.
#pragma once

#include <napi.h>

namespace weft::relay {

// Adds listen(fd, batch), unlisten(id) and resetFd(fd) to the addon's exports (addon.cc).
void RegisterListener(Napi::Env env, Napi::Object exports);

}  // namespace weft::relay
