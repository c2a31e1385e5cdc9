// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/getpeername4: a captured socket reports the destination the app connected to, not
 * 127.0.0.1:15001, so applications that log or check their peer are not confused by capture.
 */
#include "weft_maps.h"

SEC("cgroup/getpeername4")
int weft_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct weft_orig *o;
	__u32 ip;

	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&WEFT_MAP_ORIG_SK, sk, 0, 0);
	if (!o || o->dst.family != AF_INET)
		return 1;
	__builtin_memcpy(&ip, o->dst.addr, 4);
	ctx->user_ip4 = ip;
	ctx->user_port = bpf_htons(o->dst.port);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
