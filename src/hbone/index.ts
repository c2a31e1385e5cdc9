// HBONE (HTTP/2 CONNECT over mutual TLS 1.3, port 15008), wire-compatible with Istio's ztunnel.
// The public entry: the client pool and its contract (client/), the server front's contract
// (server/), Node's tls/http2 transport (node/); the native relay's transport is native/.
export * from './authority.ts';
export * from './errors.ts';
export * from './pool.ts';
export * from './server/contract.ts';
export { HboneServer, createHboneServer, type HboneRequest, type HboneServerOptions } from './node/server.ts';
export { parseConnect, type StreamEnd } from './server/front.ts';
export * from './settings.ts';
export { tunnel, type TunnelResult } from './node/tunnel.ts';
