# weft_native: the thin native addon (bpf via Debian's libbpf, setns sockets); weft_relay: the
# HBONE data path. Built by
# `npm run build:native` (node-gyp rebuild) into build/Release/weft_native.node.
# `node-gyp rebuild` deletes all of build/, including build/bpf, so the weft_bpf target re-runs
# `make -C bpf` (incremental, cheap) to put the BPF objects back.
{
  # Debug (`make native-debug`, build/Debug): libstdc++'s cheap assertions, so misuse of a container
  # (front() of an empty vector, an index past the end) aborts in tests instead of corrupting memory
  # or spinning. Tests load it with WEFT_NATIVE_BUILD=Debug (src/util/paths.ts).
  "target_defaults": {
    "configurations": {
      "Debug": {"defines": ["_GLIBCXX_ASSERTIONS"]}
    }
  },
  "targets": [
    {
      "target_name": "weft_native",
      "dependencies": ["weft_bpf"],
      "sources": ["native/addon.cc", "native/bpf.cc", "native/net.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                    "<!@(pkg-config --cflags libbpf)"],
      "ldflags": ["-pthread"],
      "libraries": ["<!@(pkg-config --libs libbpf)"]
    },
    {
      # The HBONE data path (native/relay): OpenSSL and nghttp2 are the ones inside node, which
      # exports their symbols; only their headers are needed here (node's, and libnghttp2-dev's).
      "target_name": "weft_relay",
      "sources": ["native/relay/addon.cc", "native/relay/byte_queue.cc", "native/relay/express.cc", "native/relay/express_out.cc", "native/relay/h2_callbacks.cc",
                  "native/relay/listener.cc", "native/relay/pipe.cc", "native/relay/registry.cc", "native/relay/session.cc",
                  "native/relay/stream.cc", "native/relay/tls.cc", "native/relay/util.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                    "-Wno-deprecated-declarations"]
    },
    {
      "target_name": "weft_bpf",
      "type": "none",
      "actions": [
        {
          "action_name": "bpf_objects",
          "inputs": ["<!@(ls bpf/*.bpf.c bpf/include/*.h bpf/Makefile)"],
          "outputs": ["<(PRODUCT_DIR)/../bpf/.stamp"],
          "action": ["sh", "-c", "make --no-print-directory -s -C bpf && touch build/bpf/.stamp"]
        }
      ]
    }
  ]
}
