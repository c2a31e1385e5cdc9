// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup/getpeername6: the IPv6 twin of getpeername4.bpf.c (v4-mapped destinations included). */
#include "weft_maps.h"

SEC("cgroup/getpeername6")
int weft_getpeername6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct weft_orig *o;
	__u32 a[4];

	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&WEFT_MAP_ORIG_SK, sk, 0, 0);
	if (!o)
		return 1;
	if (o->flags & WEFT_ORIG_F_V4MAPPED) {
		a[0] = 0;
		a[1] = 0;
		a[2] = bpf_htonl(0xffff);
		__builtin_memcpy(&a[3], o->dst.addr, 4);
	} else if (o->dst.family == AF_INET6) {
		__builtin_memcpy(a, o->dst.addr, 16);
	} else {
		return 1;
	}
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
	ctx->user_port = bpf_htons(o->dst.port);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
