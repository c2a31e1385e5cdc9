// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/connect6: the IPv6 twin of connect4.bpf.c. TCP connects to anything but ::1, :: or an
 * excluded port go to [::1]:15001. A v4-mapped destination (::ffff:a.b.c.d, a dual-stack socket
 * reaching IPv4) is recorded as the IPv4 address it is and rewritten to ::ffff:127.0.0.1:15001, so
 * it lands on the agent's IPv4 listener; v4-mapped loopback is left alone like 127/8.
 */
#include "weft_maps.h"

SEC("cgroup/connect6")
int weft_connect6(struct bpf_sock_addr *ctx)
{
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	struct weft_endpoint dst = { .family = AF_INET6 };
	__u32 host = bpf_ntohl(a3);

	if (ctx->protocol != IPPROTO_TCP)
		return 1;
	dst.port = bpf_ntohs(ctx->user_port);
	if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) {
		if ((host >> 24) == 127 || host == 0)
			return 1;
		dst.family = AF_INET;
		__builtin_memcpy(dst.addr, &a3, 4);
		if (!weft_capture(ctx, &dst, WEFT_ORIG_F_V4MAPPED))
			return 1;
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
	} else {
		if (a0 == 0 && a1 == 0 && a2 == 0 && (host == 0 || host == 1))
			return 1;
		__builtin_memcpy(dst.addr, &a0, 4);
		__builtin_memcpy(dst.addr + 4, &a1, 4);
		__builtin_memcpy(dst.addr + 8, &a2, 4);
		__builtin_memcpy(dst.addr + 12, &a3, 4);
		if (!weft_capture(ctx, &dst, 0))
			return 1;
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(WEFT_PORT_OUTBOUND);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
