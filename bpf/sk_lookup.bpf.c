// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_lookup, attached to ONE pod's netns by a netns link: inbound TCP arriving from outside the
 * pod is handed to the agent's plaintext listener (15006) in this pod's sockmap, whatever its
 * destination port; the accepted socket's local address is the original destination. Left alone:
 * the agent's own ports (15008 HBONE has its own listener), kubelet probes from the SNAT address,
 * ports in weft_in_excl, and connections made inside the pod, e.g. the agent delivering to the app.
 *
 * "Made inside the pod": ingress_ifindex == lo is not enough. A connection to the pod's own IP
 * is looped back, but the kernel reports the ifindex of the device owning that IP (rt_iif), e.g.
 * eth0. Such a connection has source == destination address (the default source for a local
 * destination), which a packet from outside cannot have: Linux drops arriving packets with a local
 * source as martians. So the agent must deliver from the pod IP, not a spoofed client address.
 *
 * One instance is loaded per pod because sk_lookup programs cannot learn which netns they run in
 * (bpf_get_netns_cookie is not allowed for this program type), so a shared program could not pick
 * the pod's listener. Its maps are pinned under the pod's pin directory; releasing the pod
 * destroys link, program and maps together. With no listener in the slot the connection is
 * refused (fail closed): traffic never bypasses the agent.
 */
#include "weft_maps_in.h"

SEC("sk_lookup")
int weft_sk_lookup(struct bpf_sk_lookup *ctx)
{
	__u32 port = ctx->local_port; /* host order */
	__u32 slot = ctx->family == AF_INET6 ? WEFT_IN_SLOT_V6 : WEFT_IN_SLOT_V4;
	__u32 zero = 0;
	struct bpf_sock *sk;
	__u64 *count;
	long err;

	if (ctx->protocol != IPPROTO_TCP || ctx->ingress_ifindex == WEFT_LOOPBACK_IFINDEX)
		return SK_PASS;
	if (ctx->family == AF_INET && ctx->remote_ip4 == ctx->local_ip4)
		return SK_PASS;
	if (ctx->family == AF_INET6 && ctx->remote_ip6[0] == ctx->local_ip6[0] &&
	    ctx->remote_ip6[1] == ctx->local_ip6[1] && ctx->remote_ip6[2] == ctx->local_ip6[2] &&
	    ctx->remote_ip6[3] == ctx->local_ip6[3])
		return SK_PASS;
	if (port == WEFT_PORT_HBONE || port == WEFT_PORT_INBOUND || port == WEFT_PORT_OUTBOUND)
		return SK_PASS;
	if (ctx->family == AF_INET && ctx->remote_ip4 == bpf_htonl(WEFT_PROBE_SNAT_IP4))
		return SK_PASS;
	if (bpf_map_lookup_elem(&WEFT_MAP_IN_EXCL, &port))
		return SK_PASS;
	sk = bpf_map_lookup_elem(&WEFT_MAP_IN_SOCKS, &slot);
	if (!sk)
		return SK_DROP;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err)
		return SK_DROP;
	count = bpf_map_lookup_elem(&WEFT_MAP_IN_COUNT, &zero);
	if (count)
		__sync_fetch_and_add(count, 1);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
