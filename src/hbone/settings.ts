// HBONE numbers shared by the server and the client pool, from ztunnel's defaults (see the ambient
// facts file): one place, so both ends of a weft-to-weft tunnel agree. The native relay keeps no
// copies: native/addon.ts passes them to it with every session (relaySettings).
import type { Settings } from 'node:http2';
import type { SecureContextOptions } from 'node:tls';

export const HBONE_PORT = 15008;

export const MiB = 1024 * 1024;
export const STREAM_WINDOW = 4 * MiB;
export const CONNECTION_WINDOW = 16 * MiB;
export const MAX_FRAME_SIZE = 1 * MiB;
export const SERVER_MAX_STREAMS = 200;
export const CLIENT_MAX_STREAMS = 100;
export const PING_INTERVAL_MS = 10_000;
export const PING_TIMEOUT_MS = 20_000;
export const CONNECT_TIMEOUT_MS = 10_000;
/** How long an inbound CONNECT's upstream dial may take (a `dial` decision without its own timeout). */
export const DIAL_TIMEOUT_MS = 10_000;
/**
 * How long an inbound peer has to finish TLS and prove a mesh identity. Shorter than the clients'
 * connect timeout: a handshake takes one round trip, and until it completes the peer is anonymous.
 */
export const HANDSHAKE_TIMEOUT_MS = 5_000;
export const IDLE_TIMEOUT_MS = 5 * 60_000;
export const DRAIN_DEADLINE_MS = 5_000;

/** Node counts buffered HTTP/2 data against this (MB); the 10 MB default is below one full connection window. */
export const MAX_SESSION_MEMORY_MB = 64;

/**
 * A CONNECT carries a handful of short headers (authority, forwarded, baggage, traceparent), so the
 * server accepts at most 16 KiB of them (SETTINGS_MAX_HEADER_LIST_SIZE, uncompressed) and 32 pairs.
 */
export const MAX_HEADER_LIST_SIZE = 16 * 1024;
export const MAX_HEADER_LIST_PAIRS = 32;

export const H2_SETTINGS: Settings = {
  enablePush: false,
  initialWindowSize: STREAM_WINDOW,
  maxFrameSize: MAX_FRAME_SIZE,
};

/** TLS 1.3 with AES-GCM only, as ztunnel offers. */
export const TLS_VERSION = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } as const;
export const TLS_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384';
export const ALPN = ['h2'];

/** A workload's credentials: PEM key, PEM chain (leaf first), PEM mesh root. */
export interface Credentials {
  key: string;
  certChain: string;
  root: string;
}

export function secureContextOptions(c: Credentials): SecureContextOptions {
  return { key: c.key, cert: c.certChain, ca: c.root, ...TLS_VERSION, ciphers: TLS_CIPHERS };
}
