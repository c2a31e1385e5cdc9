/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one place for constants shared by the BPF programs and the TypeScript side.
 * src/bpf/consts.ts is generated from this file by bpf/gen-consts.mjs (run by `make -C bpf`);
 * test/bpf checks that it is current. Only lines of the form
 *   #define WEFT_<NAME> <decimal | 0xhex | (1 << n) | identifier>
 * are exported; an identifier becomes a string (used for map names, which BPF_OBJ_NAME_LEN
 * limits to 15 characters).
 */
#ifndef WEFT_CONSTS_H
#define WEFT_CONSTS_H

/* Agent listeners inside every pod netns (ztunnel's in-pod ports). */
#define WEFT_PORT_OUTBOUND 15001
#define WEFT_PORT_INBOUND 15006
#define WEFT_PORT_HBONE 15008

/* SO_MARK the agent may put on sockets it opens in a pod netns; connect hooks never capture them. */
#define WEFT_AGENT_MARK 0x5EF7

/* Kubelet probes arrive from this SNAT address (169.254.7.127, host order); never steered inbound. */
#define WEFT_PROBE_SNAT_IP4 0xA9FE077F

/* The loopback device has ifindex 1 in every network namespace. */
#define WEFT_LOOPBACK_IFINDEX 1

/* Slots of the per-pod inbound sockmap: the agent's 15006 listener per address family. */
#define WEFT_IN_SLOT_V4 0
#define WEFT_IN_SLOT_V6 1
#define WEFT_IN_SLOTS 2

/* weft_orig.flags: the app used an AF_INET6 socket with a v4-mapped destination. */
#define WEFT_ORIG_F_V4MAPPED (1 << 0)

/* Map sizes. */
#define WEFT_ORIG_DST_MAX 65536
#define WEFT_OUT_COUNT_MAX 16384
#define WEFT_EXCL_MAX 4096

/* Node-wide maps, pinned by name under <pinRoot>/maps (shared by all cgroup programs). */
#define WEFT_MAP_ORIG_SK weft_orig_sk
#define WEFT_MAP_ORIG_DST weft_orig_dst
#define WEFT_MAP_OUT_EXCL weft_out_excl
#define WEFT_MAP_OUT_COUNT weft_out_count
/* Per-pod maps of the pod's own sk_lookup instance, pinned under <pinRoot>/pods/<id>. */
#define WEFT_MAP_IN_SOCKS weft_in_socks
#define WEFT_MAP_IN_EXCL weft_in_excl
#define WEFT_MAP_IN_COUNT weft_in_count

#endif
