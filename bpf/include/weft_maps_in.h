/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-pod maps of sk_lookup.bpf.c (one instance per pod; pinned by name in the pod's directory). */
#ifndef WEFT_MAPS_IN_H
#define WEFT_MAPS_IN_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "weft_consts.h"

#define AF_INET 2
#define AF_INET6 10

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, WEFT_IN_SLOTS);
	__type(key, __u32);
	__type(value, __u64); /* userspace writes a listener fd, reads its socket cookie */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_IN_SOCKS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_EXCL_MAX);
	__type(key, __u32); /* destination port, host order */
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_IN_EXCL SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64); /* connections steered to the agent */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_IN_COUNT SEC(".maps");

#endif
