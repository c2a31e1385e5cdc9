// nghttp2's callbacks (h2_callbacks.h): nghttp2 calls them while a Session sends or receives, and
// they hand over to the Session (frames, headers, data, stream closes) or fill its output queue.
// Apart from session.cc because they are nghttp2's interface, not the session's logic: each is a
// few lines that translate one call.
#include "h2_callbacks.h"

#include <algorithm>

#include "session.h"
#include "stream.h"

namespace weft::relay {
namespace {

Session* S(void* user) { return static_cast<Session*>(user); }

ssize_t OnSend(nghttp2_session*, const uint8_t* data, size_t len, int, void* user) {
  ByteQueue& out = S(user)->out();
  if (out.size() >= kOutMax) return NGHTTP2_ERR_WOULDBLOCK;
  out.append(data, len);
  return static_cast<ssize_t>(len);
}

// nghttp2 fixed this frame's length when ReadUpData answered, and after WOULDBLOCK it calls again with
// that same length, ahead of anything queued since (a RST_STREAM too). So the stream must still hold
// `len` bytes: CloseFd keeps `up` while the stream is open in HTTP/2 for exactly this. Should that
// ever break, the stream is reset (TEMPORAL_CALLBACK_FAILURE: nghttp2 drops the frame and sends
// RST_STREAM) rather than the frame being short of bytes or the relay thread spinning on it.
int OnSendData(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd, size_t len,
               nghttp2_data_source* src, void* user) {
  ByteQueue& out = S(user)->out();
  if (out.size() >= kOutMax) return NGHTTP2_ERR_WOULDBLOCK;
  auto* st = static_cast<Stream*>(src->ptr);
  if (st->up.size() < len) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  out.append(framehd, 9);
  st->up.move_to(out, len);  // no padding is ever asked for
  (void)frame;
  st->UpdatePoll();  // room again: read on
  return 0;
}

int OnFrameRecv(nghttp2_session*, const nghttp2_frame* f, void* user) {
  return S(user)->OnFrame(f) ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
}

// A refused stream must not linger: RST_STREAM(NO_ERROR) once its final response is out. Not
// before: nghttp2 would drop a response still queued behind the reset.
int OnFrameSent(nghttp2_session* h2, const nghttp2_frame* f, void* user) {
  if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && S(user)->server)
    nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
  S(user)->OnFrameSent(f);  // a drain's notice is out
  return 0;
}

int OnStreamClose(nghttp2_session*, int32_t id, uint32_t code, void* user) {
  S(user)->OnStreamClose(id, code);
  return 0;
}

int OnHeaderCb(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t namelen,
               const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  nghttp2_nv nv{const_cast<uint8_t*>(name), const_cast<uint8_t*>(value), namelen, valuelen, 0};
  S(user)->OnHeader(f->hd.stream_id, nv);
  return 0;
}

int OnBeginHeadersCb(nghttp2_session*, const nghttp2_frame* f, void* user) {
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) S(user)->OnBeginHeaders(f->hd.stream_id);
  return 0;
}

int OnDataChunk(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len, void* user) {
  S(user)->OnData(id, data, len);
  return 0;
}

}  // namespace

ssize_t ReadUpData(nghttp2_session*, int32_t, uint8_t*, size_t len, uint32_t* flags, nghttp2_data_source* src,
                   void*) {
  auto* st = static_cast<Stream*>(src->ptr);
  size_t n = std::min(len, st->up.size());
  if (n == 0) {
    if (st->fd_eof) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;  // FIN becomes END_STREAM
      return 0;
    }
    return NGHTTP2_ERR_DEFERRED;
  }
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (st->fd_eof && n == st->up.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

nghttp2_session_callbacks* Callbacks() {
  static nghttp2_session_callbacks* cb = [] {
    nghttp2_session_callbacks* c;
    nghttp2_session_callbacks_new(&c);
    nghttp2_session_callbacks_set_send_callback(c, OnSend);
    nghttp2_session_callbacks_set_send_data_callback(c, OnSendData);
    nghttp2_session_callbacks_set_on_frame_recv_callback(c, OnFrameRecv);
    nghttp2_session_callbacks_set_on_frame_send_callback(c, OnFrameSent);
    nghttp2_session_callbacks_set_on_stream_close_callback(c, OnStreamClose);
    nghttp2_session_callbacks_set_on_header_callback(c, OnHeaderCb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(c, OnBeginHeadersCb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, OnDataChunk);
    return c;
  }();
  return cb;
}

}  // namespace weft::relay
