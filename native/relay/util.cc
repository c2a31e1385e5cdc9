// Small helpers for sockets, time and libuv handles (util.h).
#include "util.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdlib>
#include <cstring>

namespace weft::relay {

void CloseHandle(uv_handle_t* h) {
  uv_close(h, [](uv_handle_t* x) { free(x); });
}

std::string ErrName(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "E" + std::to_string(err);
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

uint64_t NowMs() { return uv_hrtime() / 1000000; }

int SocketError(int fd, int uv_status) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) return err;
  return -uv_status;
}

}  // namespace weft::relay
