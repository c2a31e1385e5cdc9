// weft's only door to BPF. Everything else in weft imports from here.
//   probe.ts    kernel feature probe (assertKernelReady at agent start)
//   mounts.ts   cgroup2/bpffs discovery, cgroup ids
//   netns.ts    sockets inside a pod netns, netns cookies
//   capture.ts  NodeCapture / PodCapture: load, attach, pin, original destinations, counters
//   maps.ts     typed map access (BpfMap + codecs mirroring bpf/include)
//   consts.ts   constants generated from bpf/include/weft_consts.h
export { WEFT } from './consts.ts';
export { isBpfError, mallocTrim, type BpfError } from './addon.ts';
export { assertKernelReady, probeKernel, type ProbeReport } from './probe.ts';
export { cgroup2Mount, cgroupId, cgroupSubtree, ensureBpffs, findBpffsMount, findCgroup2Mount } from './mounts.ts';
export { connectFd, listenerInNetns, netnsCookie, originalDstSockopt, socketInNetns, socketNetnsCookie, sockName, type NetnsRef, type SocketOptions } from './netns.ts';
export { NodeCapture, PodCapture, type CaptureOptions, type PodSpec } from './capture.ts';
export { BpfMap, type Codec, type Endpoint, type OriginalDst } from './maps.ts';
