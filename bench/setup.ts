// The benchmark's lab: the same client and server pods for every path, in namespaces that differ
// only in how their traffic is carried. Nodes: clients on node-0, servers on node-1.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const PATHS = ['direct', 'weft-ebpf', 'weft-ebpf-same-node', 'weft-iptables', 'haproxy-mtls'] as const;
export type PathName = (typeof PATHS)[number];

const TOOLS = join(import.meta.dirname, 'tools');
const tsx = (tool: string, ...args: string[]) => ['node', '--import', 'tsx', join(TOOLS, tool), ...args];

function server(ns: string, extra: string[] = [], annotations = ''): string {
  return `apiVersion: v1
kind: Pod
metadata: {name: server, namespace: ${ns}${annotations}}
spec:
  nodeName: node-1
  containers:
  - name: echo
    command: ${JSON.stringify(tsx('tcp-echo.ts', '7000', '1024'))}
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

const ns = (name: string, ambient: boolean) => `apiVersion: v1
kind: Namespace
metadata: {name: ${name}${ambient ? ', labels: {istio.io/dataplane-mode: ambient}' : ''}}
`;

/** The pods of writeBenchConfig's manifests (not the scale pods). */
export const BENCH_PODS = ['direct', 'ebpf', 'local', 'ipt', 'haproxy'].flatMap((n) => [`bench-${n}/server`, `bench-${n}/client`]);

/** Writes the manifests and HAProxy's certificates and server config into dir. */
export function writeBenchConfig(dir: string): void {
  mkdirSync(dir, { recursive: true });
  const pki = join(dir, 'pki');
  mkdirSync(pki, { recursive: true });
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: pki, stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=bench-ca');
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`);
    ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.crt`, '-days', '2');
    execFileSync('sh', ['-c', `cat ${who}.crt ${who}.key > ${who}.pem`], { cwd: pki });
  }
  const tlsOpts = `ca-file ${pki}/ca.pem verify required ssl-min-ver TLSv1.3`;
  writeFileSync(
    join(dir, 'haproxy-server.cfg'),
    `global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n` +
      `frontend echo\n  bind :8443 ssl crt ${pki}/server.pem ${tlsOpts}\n  default_backend echo\nbackend echo\n  server s 127.0.0.1:7000\n` +
      `frontend iperf\n  bind :8444 ssl crt ${pki}/server.pem ${tlsOpts}\n  default_backend iperf\nbackend iperf\n  server s 127.0.0.1:5201\n`,
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
      server('bench-direct'),
      client('bench-direct', 'client', 'node-0'),
      server('bench-ebpf'),
      client('bench-ebpf', 'client', 'node-0'),
      server('bench-local'),
      client('bench-local', 'client', 'node-1'),
      server('bench-ipt', [], ipt),
      client('bench-ipt', 'client', 'node-0', ipt),
      server('bench-haproxy', [haproxy]),
      client('bench-haproxy', 'client', 'node-0'),
    ].join('---\n'),
  );
}

/** HAProxy on the client side: plaintext in on loopback, mutual TLS out to the server pod. */
export function haproxyClientConfig(dir: string, serverIP: string): string {
  const pki = join(dir, 'pki');
  const tls = `ssl crt ${pki}/client.pem ca-file ${pki}/ca.pem verify required ssl-min-ver TLSv1.3 verifyhost server`;
  const cfg = join(dir, 'haproxy-client.cfg');
  writeFileSync(
    cfg,
    `global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n` +
      `frontend echo\n  bind 127.0.0.1:7000\n  default_backend echo\nbackend echo\n  server s ${serverIP}:8443 ${tls}\n` +
      `frontend iperf\n  bind 127.0.0.1:5201\n  default_backend iperf\nbackend iperf\n  server s ${serverIP}:8444 ${tls}\n`,
  );
  return cfg;
}

/** Scale pods for the agent memory figure: many enrolled pods on node-0. */
export function scalePods(n: number): string {
  return [ns('bench-scale', true), ...Array.from({ length: n }, (_, i) => client('bench-scale', `idle-${i}`, 'node-0'))].join('---\n');
}

export { tsx };
