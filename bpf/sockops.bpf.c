// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockops, attached to a pod's cgroup: publishes the original destination of a captured socket
 * under the key the agent can compute from an accept()ed connection.
 *
 * Why: connect4/6 know the original destination and the socket cookie, but the agent's accepted
 * socket shares nothing with the client socket except the 4-tuple. At connect time the client's
 * source port is not chosen yet; at BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB (SYN-ACK received, before
 * the final ACK is sent, so before the agent's accept() can return) it is. We then copy the
 * socket-storage record into the LRU map weft_orig_dst keyed by (pod netns cookie, client address,
 * client port) = (agent listener's netns, accepted socket's peer). The agent deletes the entry
 * when it reads it; the LRU bound covers connections the agent never accepts. The socket storage
 * itself is freed with the socket. This callback needs no bpf_sock_ops_cb_flags_set().
 */
#include "weft_maps.h"

SEC("sockops")
int weft_sockops(struct bpf_sock_ops *skops)
{
	struct weft_peer_key key = {};
	struct bpf_sock *sk;
	struct weft_orig *o;
	__u32 a[4];

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&WEFT_MAP_ORIG_SK, sk, 0, 0);
	if (!o)
		return 1;
	key.netns_cookie = o->netns_cookie;
	key.client.port = skops->local_port; /* host order */
	if (skops->family == AF_INET) {
		a[0] = skops->local_ip4;
		key.client.family = AF_INET;
		__builtin_memcpy(key.client.addr, &a[0], 4);
	} else {
		a[0] = skops->local_ip6[0];
		a[1] = skops->local_ip6[1];
		a[2] = skops->local_ip6[2];
		a[3] = skops->local_ip6[3];
		if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff)) {
			key.client.family = AF_INET; /* the agent's IPv4 listener sees a plain IPv4 peer */
			__builtin_memcpy(key.client.addr, &a[3], 4);
		} else {
			key.client.family = AF_INET6;
			__builtin_memcpy(key.client.addr, a, 16);
		}
	}
	bpf_map_update_elem(&WEFT_MAP_ORIG_DST, &key, o, BPF_ANY);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
