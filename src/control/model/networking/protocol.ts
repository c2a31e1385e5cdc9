// Which protocol a service port speaks, as Istio selects it explicitly: the port's appProtocol,
// else its name (`<protocol>[-<suffix>]`), case-insensitive; appProtocol wins when both are set.
// grpc and grpc-web are HTTP/2 (Istio treats them as http2). A port that declares nothing is
// `auto`: Istio detects HTTP there; weft routes it as HTTP (what proxyless clients and the
// waypoint did before protocols were declared). Anything declared but not HTTP is opaque TCP.
// https://istio.io/latest/docs/ops/configuration/traffic-management/protocol-selection/

export type PortProtocol = 'http' | 'http2' | 'grpc' | 'grpc-web' | 'tcp' | 'auto';

const BY_NAME: Record<string, PortProtocol> = {
  http: 'http',
  http2: 'http2',
  grpc: 'grpc',
  'grpc-web': 'grpc-web',
  h2c: 'http2',
  // Kubernetes' standard application protocols (KEP-3726), as Istio maps them.
  'kubernetes.io/h2c': 'http2',
  'kubernetes.io/ws': 'http',
  tcp: 'tcp',
  tls: 'tcp',
  https: 'tcp',
  'kubernetes.io/wss': 'tcp',
  mongo: 'tcp',
  mysql: 'tcp',
  redis: 'tcp',
  udp: 'tcp',
};

function fromValue(v: string | undefined): PortProtocol | undefined {
  if (!v) return undefined;
  const p = v.toLowerCase();
  return BY_NAME[p];
}

/** A Kubernetes Service port's protocol. */
export function servicePortProtocol(port: { name?: string; appProtocol?: string }): PortProtocol {
  const app = fromValue(port.appProtocol);
  if (app) return app;
  // `grpc-web` must be tried before `grpc` (the name `grpc-web-x` is grpc-web, `grpc-x` is grpc).
  const name = (port.name ?? '').toLowerCase();
  for (const p of ['grpc-web', 'http2', 'http', 'grpc', 'h2c', 'tcp', 'tls', 'https', 'mongo', 'mysql', 'redis', 'udp']) {
    if (name === p || name.startsWith(`${p}-`)) return BY_NAME[p]!;
  }
  return 'auto';
}

/** A ServiceEntry port: its `protocol` field (HTTP, HTTP2, GRPC, TCP...), else its name as above. */
export function serviceEntryPortProtocol(port: { name: string; protocol?: string }): PortProtocol {
  return fromValue(port.protocol) ?? servicePortProtocol({ name: port.name });
}

/** HTTP of either version: the port is routed by the HTTP routes (and proxyless clients see an HTTP listener). */
export const isHttp = (p: PortProtocol): boolean => p !== 'tcp';

/** The upstream speaks HTTP/2 with prior knowledge (Envoy: the cluster's explicit http2_protocol_options). */
export const isHttp2 = (p: PortProtocol): boolean => p === 'http2' || p === 'grpc' || p === 'grpc-web';
