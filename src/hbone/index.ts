// HBONE (HTTP/2 CONNECT over mutual TLS 1.3, port 15008), wire-compatible with Istio's ztunnel.
export * from './authority.ts';
export * from './errors.ts';
export * from './pool.ts';
export * from './server.ts';
export * from './settings.ts';
export { tunnel, type TunnelResult } from './tunnel.ts';
