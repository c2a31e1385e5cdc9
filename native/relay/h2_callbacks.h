// nghttp2's callbacks into a Session and its Streams (h2_callbacks.cc): one callback table for every
// session, and the data source that frames a stream's `up` queue.
#pragma once

#include <nghttp2/nghttp2.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace weft::relay {

// The table every session is made with; its user data is the Session.
nghttp2_session_callbacks* Callbacks();

// The data provider's read callback for a stream (source.ptr is the Stream): how much of `up` the
// next DATA frame carries (copied by OnSendData, NGHTTP2_DATA_FLAG_NO_COPY), and END_STREAM once the
// socket's FIN has been framed.
ssize_t ReadUpData(nghttp2_session*, int32_t, uint8_t*, size_t len, uint32_t* flags, nghttp2_data_source* src,
                   void*);

}  // namespace weft::relay
