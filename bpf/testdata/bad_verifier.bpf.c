// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Deliberately rejected by the verifier (reads the stack uninitialised): tests use it to check that
 * load failures carry errno and the verifier log. Not part of weft. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup/connect4")
int weft_bad(struct bpf_sock_addr *ctx)
{
	volatile __u64 junk[2];

	return (int)junk[ctx->user_port & 1];
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
