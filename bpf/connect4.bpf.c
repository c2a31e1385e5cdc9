// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/connect4, attached to a pod's cgroup: a TCP connect() from the pod to anything but
 * loopback (or an excluded port, or from a socket with the agent mark) is rewritten to
 * 127.0.0.1:15001, the agent's outbound listener inside the pod netns. The original destination
 * is kept in socket storage (see weft_maps.h, sockops.bpf.c). Because the rewrite happens before
 * the route lookup, no netfilter rule and nothing in the node netns is involved.
 */
#include "weft_maps.h"

SEC("cgroup/connect4")
int weft_connect4(struct bpf_sock_addr *ctx)
{
	__u32 ip = ctx->user_ip4; /* network order */
	__u32 host = bpf_ntohl(ip);
	struct weft_endpoint dst = { .family = AF_INET };

	if (ctx->protocol != IPPROTO_TCP || (host >> 24) == 127 || host == 0)
		return 1;
	dst.port = bpf_ntohs(ctx->user_port);
	__builtin_memcpy(dst.addr, &ip, 4);
	if (!weft_capture(ctx, &dst, 0))
		return 1;
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(WEFT_PORT_OUTBOUND);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
