// Environment for the `weft agent` and `weft control` processes, set by everything that launches
// one (the lab, the DaemonSet and Deployment, the scale bench).
//
// V8 sizes its young generation (the semi-spaces that new objects are allocated in) by how much
// survives each scavenge, up to 16 MB per semi-space on 64-bit. A burst of enrollments (a hundred
// pods, their listeners, certificates and log lines) grew it to 32 MB, of which ~20 MB stayed
// resident while the agent idled: a fifth of its RSS in `make bench`, and it varied from run to
// run with GC timing. 2 MB semi-spaces bound it; the relay's per-chunk data lives outside the
// heap (pooled read buffers, src/hbone/forward.ts), so the data path's scavenges stay
// short. Measured in `make bench` (agent RSS with 100 enrolled pods; throughput and latency).
export const AGENT_NODE_OPTIONS = '--max-semi-space-size=2';

// glibc raises its mmap threshold (and with it the heap's trim threshold, to twice that) each time
// a large block is freed, up to 32 MB, so freed memory stays in the heap. After a bulk transfer the
// receiving agent's heap stood at 27 MB. A fixed threshold keeps trimming on, as for the control
// plane (src/api/process-env.ts): heap 23 MB, RSS 98 -> 89 MB after the same traffic.
export const AGENT_GLIBC_TUNABLES = 'glibc.malloc.mmap_threshold=131072';

/** The agent's environment on top of `env`: its Node options and glibc tunables after any already there. */
export function agentEnv(env: Readonly<Record<string, string | undefined>> = {}): Record<string, string> {
  return {
    NODE_OPTIONS: [env.NODE_OPTIONS, AGENT_NODE_OPTIONS].filter(Boolean).join(' '),
    GLIBC_TUNABLES: [env.GLIBC_TUNABLES, AGENT_GLIBC_TUNABLES].filter(Boolean).join(':'),
  };
}

// glibc's malloc raises its mmap threshold to the largest block freed so far. After the first
// multi-megabyte response (a new agent's full sync) is freed, later ones come from the heap, whose
// freed space is rarely returned to the system: a hundred agents syncing left ~250 MB of RSS
// behind that the control plane no longer used. A fixed threshold keeps large buffers in mmap,
// which returns them when they are freed. Measured in `make bench` (bench/control-scale.ts).
export const CONTROL_PLANE_ENV: Readonly<Record<string, string>> = { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=131072' };
