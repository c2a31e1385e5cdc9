// ByteQueue: the buffer every relayed byte passes through (a stream's two directions, a session's
// HTTP/2 and TLS output, a pipe's two directions). Its own file because all of them use it and it
// depends on nothing else in the relay.
//
// A byte queue of 64 KiB blocks from a process-wide free list: no realloc or memmove as it grows,
// no malloc(3) large enough to become mmap(2) (the agent caps glibc's mmap threshold), and no
// memory held while empty, so idle streams cost nothing. Relay thread only (the free list is not
// locked).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft::relay {

constexpr size_t kBlock = 64 * 1024;

class ByteQueue {
 public:
  ByteQueue() = default;
  ByteQueue(const ByteQueue&) = delete;
  ByteQueue& operator=(const ByteQueue&) = delete;
  ~ByteQueue() { consume(size_); }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // The first contiguous piece.
  const uint8_t* front() const { return blocks_.front().p + blocks_.front().head; }
  size_t front_len() const { return blocks_.front().tail - blocks_.front().head; }
  void consume(size_t n);
  // Room at the tail (a fresh block when the last is full); commit() what was filled.
  uint8_t* tail(size_t* room);
  void commit(size_t n) {
    blocks_.back().tail += n;
    size_ += n;
  }
  void append(const uint8_t* p, size_t n);
  // Moves n bytes from this queue's front to dst's tail.
  void move_to(ByteQueue& dst, size_t n);
  // Sends from the front with one sendmsg(2); what send returns.
  ssize_t send_to(int fd) const;

 private:
  struct Block {
    uint8_t* p;
    size_t head, tail;
  };
  std::vector<Block> blocks_;
  size_t size_ = 0;
};

}  // namespace weft::relay
