// The benchmark's lab: the same client and server pods for every path, in namespaces that differ
// only in how their traffic is carried. Nodes: clients on node-0, servers on node-1.
//
// The HTTP paths (HTTP/1.1, a 1 KB POST answered with 1 KB by bench/tools/http-server.ts, sent by weft-load) measure the
// waypoint's L7 hop against the same hop in HAProxy:
//   direct-http        client → server pod (the load generator's floor)
//   weft-ebpf-http     client → agent → HBONE → agent → server, to the Service's address (L4 only)
//   weft-waypoint      client → agent → HBONE → waypoint (TLS, HTTP/2 CONNECT and HTTP/1.1 ended,
//                      routed, sent on) → HBONE → agent → server: the L4 path plus one L7 proxy
//   haproxy-mtls-http  client → HAProxy (client pod, L4) → mutual TLS → HAProxy (server pod, L4)
//                      → server: HAProxy's L4 path, the counterpart of weft-ebpf-http
//   haproxy-http       client → HAProxy (client pod, L4) → mutual TLS → HAProxy `middle` pod (mode
//                      http: TLS and HTTP/1.1 ended, request parsed and sent on a kept-alive pool)
//                      → mutual TLS → HAProxy (server pod, L4) → server: HAProxy's L4 path plus
//                      one L7 proxy, on the waypoint's node, as weft's path has two L4 hops and one
//                      L7 proxy. The edges stay L4 (mode tcp) as weft's agents do.
// What each L7 proxy adds is its path minus its own L4 path: weft-waypoint − weft-ebpf-http
// against haproxy-http − haproxy-mtls-http. (HAProxy carries no HTTP/2 CONNECT tunnel inside its
// TLS: that framing is weft's and counts against it.)
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';

export const PATHS = ['direct', 'weft-ebpf', 'weft-ebpf-same-node', 'weft-iptables', 'haproxy-mtls', 'direct-http', 'weft-ebpf-http', 'weft-waypoint', 'weft-waypoint-jwt-authz', 'haproxy-mtls-http', 'haproxy-http'] as const;
export type PathName = (typeof PATHS)[number];
/** The paths of HTTP requests (latency and L7 proxy cost only: no iperf, no connection rate). */
export const HTTP_PATHS: readonly PathName[] = ['direct-http', 'weft-ebpf-http', 'weft-waypoint', 'weft-waypoint-jwt-authz', 'haproxy-mtls-http', 'haproxy-http'];
/** The HTTP server's port in the server pods, and the Service port (named http) in front of it. */
export const HTTP_PORT = 8080;
export const HTTP_SERVICE = 'http';
/** The waypoint's namespace and Gateway, and HAProxy's L7 proxy pod (in bench-haproxy). */
export const WAYPOINT_NS = 'bench-wp';
export const WAYPOINT_GATEWAY = 'waypoint';
export const MIDDLE_POD = 'middle';
/**
 * weft-waypoint-jwt-authz: the same waypoint and server, through a second Service that a
 * RequestAuthentication (a JWT verified against an inline JWKS) and an AuthorizationPolicy with L7
 * fields (request principal, namespace, method, path, header) target. Every request carries the
 * token (the file the load generator reads its extra header from).
 */
export const SECURE_SERVICE = 'http-secure';
export const TOKEN_HEADER_FILE = 'bench-token-header';
const JWT_ISSUER = 'https://bench.weft.dev';

const TOOLS = join(import.meta.dirname, 'tools');
const tsx = (tool: string, ...args: string[]) => ['node', '--import', 'tsx', join(TOOLS, tool), ...args];
/** The load generator and echo server (bench/tools/weft-load.c, built by `make tools`). */
export const WEFT_LOAD = join(import.meta.dirname, '..', 'build', 'bench', 'weft-load');

const httpContainer = `  - name: http
    command: ${JSON.stringify(tsx('http-server.ts', String(HTTP_PORT), '1024'))}
    workingDir: ${JSON.stringify(join(import.meta.dirname, '..'))}
    ports: [{name: http, containerPort: ${HTTP_PORT}}]
    readinessProbe: {tcpSocket: {port: ${HTTP_PORT}}, periodSeconds: 2}
`;

/** A Service (port 80, named http) in front of the namespace's server pod's HTTP server. */
const httpService = (ns: string, labels = '') => `apiVersion: v1
kind: Service
metadata: {name: ${HTTP_SERVICE}, namespace: ${ns}${labels}}
spec:
  selector: {app: server}
  ports: [{name: http, port: 80, targetPort: ${HTTP_PORT}}]
`;

function server(ns: string, extra: string[] = [], annotations = '', http = false): string {
  return `apiVersion: v1
kind: Pod
metadata: {name: server, namespace: ${ns}, labels: {app: server}${annotations}}
spec:
  nodeName: node-1
  containers:
${http ? httpContainer : ''}  - name: echo
    command: ${JSON.stringify([WEFT_LOAD, 'echo', '7000', '1024'])}
    workingDir: ${JSON.stringify(join(import.meta.dirname, '..'))}
    readinessProbe: {tcpSocket: {port: 7000}, periodSeconds: 2}
  - name: iperf
    command: ["iperf3", "-s", "-p", "5201"]
${extra.join('')}`;
}

const client = (ns: string, name: string, node: string, annotations = '') => `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${ns}${annotations}}
spec:
  nodeName: ${node}
  containers: [{name: shell, image: weft/sleep}]
`;

const ns = (name: string, ambient: boolean, waypoint?: string) => `apiVersion: v1
kind: Namespace
metadata: {name: ${name}${ambient ? `, labels: {istio.io/dataplane-mode: ambient${waypoint ? `, istio.io/use-waypoint: ${waypoint}` : ''}}` : ''}}
`;

/** The waypoint's namespace: an HTTP server only, behind a Service that uses the namespace's waypoint. */
const waypointNamespace = () =>
  [
    ns(WAYPOINT_NS, true, WAYPOINT_GATEWAY),
    `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ${WAYPOINT_GATEWAY}, namespace: ${WAYPOINT_NS}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
`,
    `apiVersion: v1
kind: Pod
metadata: {name: server, namespace: ${WAYPOINT_NS}, labels: {app: server}}
spec:
  nodeName: node-1
  containers:
${httpContainer}`,
    httpService(WAYPOINT_NS),
    httpService(WAYPOINT_NS).replace(`name: ${HTTP_SERVICE},`, `name: ${SECURE_SERVICE},`),
    client(WAYPOINT_NS, 'client', 'node-0'),
  ];

/** The JWT and L7 policy of SECURE_SERVICE, and the header line carrying a token they accept. */
async function secureServicePolicies(dir: string): Promise<string[]> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES256', use: 'sig' };
  const token = await new SignJWT({ scope: 'bench' }).setProtectedHeader({ alg: 'ES256', kid: 'bench' }).setIssuer(JWT_ISSUER).setSubject('loadgen').setAudience('bench').setIssuedAt().setExpirationTime('2d').sign(privateKey);
  writeFileSync(join(dir, TOKEN_HEADER_FILE), `authorization: Bearer ${token}\n`);
  const target = `targetRefs: [{kind: Service, group: "", name: ${SECURE_SERVICE}}]`;
  return [
    `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ${SECURE_SERVICE}, namespace: ${WAYPOINT_NS}}
spec:
  ${target}
  jwtRules: [{issuer: "${JWT_ISSUER}", audiences: [bench], jwks: ${JSON.stringify(JSON.stringify({ keys: [jwk] }))}}]
`,
    `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ${SECURE_SERVICE}, namespace: ${WAYPOINT_NS}}
spec:
  ${target}
  action: ALLOW
  rules:
  - from: [{source: {namespaces: [${WAYPOINT_NS}], requestPrincipals: ["${JWT_ISSUER}/loadgen"]}}]
    to: [{operation: {methods: [POST], paths: ["/"]}}]
    when: [{key: "request.headers[content-type]", values: [application/octet-stream]}]
`,
  ];
}

/** The pods of writeBenchConfig's manifests (not the scale pods). */
export const BENCH_PODS = ['direct', 'ebpf', 'local', 'ipt', 'haproxy', 'wp'].flatMap((n) => [`bench-${n}/server`, `bench-${n}/client`]);

/** Writes the manifests, HAProxy's certificates and server config, and the bench JWT into dir. */
export async function writeBenchConfig(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const pki = join(dir, 'pki');
  mkdirSync(pki, { recursive: true });
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: pki, stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=bench-ca');
  for (const who of ['server', 'client', MIDDLE_POD]) {
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`);
    ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.crt`, '-days', '2');
    execFileSync('sh', ['-c', `cat ${who}.crt ${who}.key > ${who}.pem`], { cwd: pki });
  }
  const tlsOpts = `ca-file ${pki}/ca.pem verify required ssl-min-ver TLSv1.3`;
  writeFileSync(
    join(dir, 'haproxy-server.cfg'),
    `global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n` +
      `frontend echo\n  bind :8443 ssl crt ${pki}/server.pem ${tlsOpts}\n  default_backend echo\nbackend echo\n  server s 127.0.0.1:7000\n` +
      `frontend iperf\n  bind :8444 ssl crt ${pki}/server.pem ${tlsOpts}\n  default_backend iperf\nbackend iperf\n  server s 127.0.0.1:5201\n` +
      `frontend http\n  bind :8445 ssl crt ${pki}/server.pem ${tlsOpts}\n  default_backend http\nbackend http\n  server s 127.0.0.1:${HTTP_PORT}\n`,
  );
  const haproxy = `  - name: haproxy\n    command: ["haproxy", "-db", "-f", "${join(dir, 'haproxy-server.cfg')}"]\n`;
  const ipt = ',\n  annotations: {weft.dev/capture: iptables}';
  writeFileSync(
    join(dir, 'bench.yaml'),
    [
      ns('bench-direct', false),
      ns('bench-ebpf', true),
      // Same node: a server of its own, so no path inherits another's TIME_WAIT sockets or app state.
      ns('bench-local', true),
      ns('bench-ipt', true),
      ns('bench-haproxy', false),
      server('bench-direct', [], '', true),
      client('bench-direct', 'client', 'node-0'),
      server('bench-ebpf', [], '', true),
      httpService('bench-ebpf'),
      client('bench-ebpf', 'client', 'node-0'),
      server('bench-local'),
      client('bench-local', 'client', 'node-1'),
      server('bench-ipt', [], ipt),
      client('bench-ipt', 'client', 'node-0', ipt),
      server('bench-haproxy', [haproxy], '', true),
      client('bench-haproxy', 'client', 'node-0'),
      ...waypointNamespace(),
      ...(await secureServicePolicies(dir)),
    ].join('---\n'),
  );
}

/**
 * HAProxy on the client side: plaintext in on loopback, mutual TLS out to the server pod; for
 * HTTP also to the middle pod (haproxy-http), in mode tcp as weft's agents are L4.
 */
export function haproxyClientConfig(dir: string, serverIP: string, middleIP: string): string {
  const pki = join(dir, 'pki');
  const tls = `ssl crt ${pki}/client.pem ca-file ${pki}/ca.pem verify required ssl-min-ver TLSv1.3 verifyhost server`;
  const cfg = join(dir, 'haproxy-client.cfg');
  writeFileSync(
    cfg,
    `global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n` +
      `frontend echo\n  bind 127.0.0.1:7000\n  default_backend echo\nbackend echo\n  server s ${serverIP}:8443 ${tls}\n` +
      `frontend iperf\n  bind 127.0.0.1:5201\n  default_backend iperf\nbackend iperf\n  server s ${serverIP}:8444 ${tls}\n` +
      `frontend http\n  bind 127.0.0.1:${HTTP_PORT}\n  default_backend http\nbackend http\n  server s ${serverIP}:8445 ${tls}\n` +
      `frontend http-l7\n  bind 127.0.0.1:${HTTP_PORT + 1}\n  default_backend http-l7\nbackend http-l7\n  server s ${middleIP}:8443 ${tls.replace('verifyhost server', `verifyhost ${MIDDLE_POD}`)}\n`,
  );
  return cfg;
}

/**
 * HAProxy's L7 proxy for haproxy-http, as a pod on `node` (the waypoint's node): mode http,
 * mutual TLS on both sides (its own certificate, verified against the bench CA), requests sent on
 * to the server pod's HAProxy over kept-alive, reused connections (HAProxy's defaults). One
 * thread, as the waypoint is one Node event loop.
 */
export function haproxyMiddle(dir: string, serverIP: string, node: string): string {
  const pki = join(dir, 'pki');
  const cfg = join(dir, 'haproxy-middle.cfg');
  writeFileSync(
    cfg,
    `global\n  maxconn 4096\n  nbthread 1\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n  timeout http-keep-alive 120s\n` +
      `frontend l7\n  bind :8443 ssl crt ${pki}/${MIDDLE_POD}.pem ca-file ${pki}/ca.pem verify required ssl-min-ver TLSv1.3\n  default_backend app\n` +
      `backend app\n  server s ${serverIP}:8445 ssl crt ${pki}/${MIDDLE_POD}.pem ca-file ${pki}/ca.pem verify required ssl-min-ver TLSv1.3 verifyhost server\n`,
  );
  const manifest = join(dir, 'middle.yaml');
  writeFileSync(
    manifest,
    `apiVersion: v1
kind: Pod
metadata: {name: ${MIDDLE_POD}, namespace: bench-haproxy}
spec:
  nodeName: ${node}
  containers:
  - name: haproxy
    command: ["haproxy", "-db", "-f", "${cfg}"]
    readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 2}
`,
  );
  return manifest;
}

/** Scale pods for the agent memory figure: many enrolled pods on node-0. */
export function scalePods(n: number): string {
  return [ns('bench-scale', true), ...Array.from({ length: n }, (_, i) => client('bench-scale', `idle-${i}`, 'node-0'))].join('---\n');
}

