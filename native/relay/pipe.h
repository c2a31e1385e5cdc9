// Plaintext relays between two sockets (pipe.cc), on the relay thread.
#pragma once

#include <cstdint>

namespace weft::relay {

// A relay between a and b (ours from then on); `done` and `close` under id.
void StartPipe(uint32_t id, int a, int b);
// Frees the pipes that finished (from Reap, registry.cc).
void ReapPipes();

}  // namespace weft::relay
