// ByteQueue (byte_queue.h): its blocks, and the free list they return to.
#include "byte_queue.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace weft::relay {

namespace {
std::vector<uint8_t*>& g_free_blocks = *new std::vector<uint8_t*>();  // relay thread; never destroyed
constexpr size_t kFreeBlocksMax = 64;  // 4 MiB kept for the next burst
}  // namespace

void ByteQueue::consume(size_t n) {
  size_ -= n;
  while (n > 0 || (!blocks_.empty() && blocks_.front().head == blocks_.front().tail)) {
    Block& b = blocks_.front();
    size_t k = std::min(n, b.tail - b.head);
    b.head += k;
    n -= k;
    if (b.head < b.tail) break;
    if (g_free_blocks.size() < kFreeBlocksMax) g_free_blocks.push_back(b.p);
    else free(b.p);
    blocks_.erase(blocks_.begin());
    if (blocks_.empty()) break;
  }
}

uint8_t* ByteQueue::tail(size_t* room) {
  if (blocks_.empty() || blocks_.back().tail == kBlock) {
    uint8_t* p;
    if (!g_free_blocks.empty()) {
      p = g_free_blocks.back();
      g_free_blocks.pop_back();
    } else if (!(p = static_cast<uint8_t*>(malloc(kBlock)))) {
      abort();
    }
    blocks_.push_back({p, 0, 0});
  }
  *room = kBlock - blocks_.back().tail;
  return blocks_.back().p + blocks_.back().tail;
}

void ByteQueue::append(const uint8_t* p, size_t n) {
  while (n > 0) {
    size_t room;
    uint8_t* t = tail(&room);
    size_t k = std::min(room, n);
    memcpy(t, p, k);
    commit(k);
    p += k;
    n -= k;
  }
}

void ByteQueue::move_to(ByteQueue& dst, size_t n) {
  // Never past the end: front() of no block is undefined, and a loop that cannot advance spins.
  while (n > 0 && size_ > 0) {
    size_t k = std::min(n, front_len());
    dst.append(front(), k);
    consume(k);
    n -= k;
  }
}

ssize_t ByteQueue::send_to(int fd) const {
  iovec v[16];
  size_t n = 0;
  for (const Block& b : blocks_) {
    if (n == 16) break;
    v[n++] = {b.p + b.head, b.tail - b.head};
  }
  msghdr m{};
  m.msg_iov = v;
  m.msg_iovlen = n;
  return ::sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
}

}  // namespace weft::relay
