// Small helpers for sockets, time and libuv handles, shared by sessions, streams and pipes.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

namespace weft::relay {

uint64_t NowMs();

// What went wrong on a socket whose poll failed: libuv reports EPOLLERR (a reset, say) as EBADF.
int SocketError(int fd, int uv_status);

// An errno's name (ECONNRESET), or E<number> if it has none.
std::string ErrName(int err);

void SetNoDelay(int fd);

// Closes a handle allocated with malloc/calloc and frees it once libuv is done with it.
void CloseHandle(uv_handle_t* h);

}  // namespace weft::relay
