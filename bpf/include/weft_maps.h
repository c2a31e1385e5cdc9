/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types and node-wide maps shared by the cgroup programs (connect4/6, sockops, getpeername4/6).
 * Every map is pinned by name, so each object loaded with the same pin root (libbpf
 * pin_root_path) reuses the same maps. The TypeScript codecs in src/bpf/maps.ts mirror these
 * structs; the loader checks key/value sizes against the kernel's map info.
 */
#ifndef WEFT_MAPS_H
#define WEFT_MAPS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "weft_consts.h"

#define AF_INET 2
#define AF_INET6 10

/* An L4 endpoint. addr is network order; IPv4 uses addr[0..3], the rest is zero. */
struct weft_endpoint {
	__u8 addr[16];
	__u16 port; /* host order */
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 pad;
};

/* What connect4/6 remember about a captured socket (socket-local storage, freed with the socket). */
struct weft_orig {
	struct weft_endpoint dst; /* the destination the app asked for */
	__u32 flags; /* WEFT_ORIG_F_* */
	__u64 netns_cookie; /* the pod's netns */
	__u64 cgroup_id; /* cgroup of the connecting task */
};

/* Key of weft_orig_dst: the client end of a captured connection, as the agent's accept() sees it. */
struct weft_peer_key {
	__u64 netns_cookie;
	struct weft_endpoint client;
	__u32 pad;
};

/* Key of weft_out_excl: netns_cookie 0 applies to every pod. */
struct weft_excl_key {
	__u64 netns_cookie;
	__u32 port; /* host order */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct weft_orig);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_ORIG_SK SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_ORIG_DST_MAX);
	__type(key, struct weft_peer_key);
	__type(value, struct weft_orig);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_ORIG_DST SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_EXCL_MAX);
	__type(key, struct weft_excl_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_OUT_EXCL SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_OUT_COUNT_MAX);
	__type(key, __u64); /* cgroup id */
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_OUT_COUNT SEC(".maps");

static __always_inline void weft_count(void *map, const void *key)
{
	__u64 one = 1, *v = bpf_map_lookup_elem(map, key);

	if (v) {
		__sync_fetch_and_add(v, 1);
		return;
	}
	if (bpf_map_update_elem(map, key, &one, BPF_NOEXIST) && (v = bpf_map_lookup_elem(map, key)))
		__sync_fetch_and_add(v, 1);
}

/*
 * Decide and record an outbound capture (shared by connect4 and connect6). Returns 1 to capture.
 * The original destination goes into the socket's local storage, where sockops and getpeername
 * find it later and where it dies with the socket.
 */
static __always_inline int weft_capture(struct bpf_sock_addr *ctx, const struct weft_endpoint *dst,
					__u32 flags)
{
	struct bpf_sock *sk = ctx->sk;
	struct weft_excl_key ek = { .port = dst->port };
	struct weft_orig *o;
	__u64 cg, netns;

	if (!sk || sk->mark == WEFT_AGENT_MARK)
		return 0;
	netns = bpf_get_netns_cookie(ctx);
	if (bpf_map_lookup_elem(&WEFT_MAP_OUT_EXCL, &ek))
		return 0;
	ek.netns_cookie = netns;
	if (bpf_map_lookup_elem(&WEFT_MAP_OUT_EXCL, &ek))
		return 0;
	cg = bpf_get_current_cgroup_id();
	weft_count(&WEFT_MAP_OUT_COUNT, &cg);
	/* If storage cannot be allocated, still capture: the agent refuses a connection it cannot
	 * place (fail closed) rather than letting it bypass the mesh. */
	o = bpf_sk_storage_get(&WEFT_MAP_ORIG_SK, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (o) {
		o->dst = *dst;
		o->flags = flags;
		o->netns_cookie = netns;
		o->cgroup_id = cg;
	}
	return 1;
}

#endif
