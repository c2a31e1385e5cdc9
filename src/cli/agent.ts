// `weft agent`: the node agent (a DaemonSet pod in Kubernetes; one process per node in the lab).
import { Command, InvalidArgumentError, Option } from 'commander';
import type { runAgent } from '../agent/main.ts';
import { DEFAULT_HBONE_LIMITS } from '../hbone/admission.ts';
import { parseCidrs } from '../util/cidrs.ts';

const positiveInt = (v: string) => {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`${v} is not a positive integer`);
  return n;
};
const L = DEFAULT_HBONE_LIMITS;

export function registerAgentCommand(program: Command): void {
  program
    .command('agent')
    .description('run the node agent: in-pod traffic capture, relay, metrics')
    .requiredOption('--node <name>', 'this node')
    .option('--socket <path>', 'enrollment socket', '/var/run/weft/agent.sock')
    .option('--state-dir <dir>', 'agent state: enrolled pods, and (root-only, in cache/) the last mesh state and workload certificates', '/var/run/weft/agent')
    .option('--pin-root <dir>', 'bpffs directory for pinned programs, links and maps', '/sys/fs/bpf/weft')
    .addOption(new Option('--capture <mode>', 'capture mode').choices(['ebpf', 'iptables']).default('ebpf'))
    .option('--node-netns <path>', "the node's network namespace, for the kubelet probe rules (default: the agent's own)")
    .addOption(new Option('--data-path <impl>', "HBONE data path: native (TLS, HTTP/2 and relay in C++) or node (Node's tls and http2)").choices(['native', 'node']).default('native'))
    .option('--metrics-address <ip>', 'address for :15020 metrics and :15021 readiness', '0.0.0.0')
    .option('--metrics-port <port>', 'metrics port', (v) => parseInt(v, 10), 15020)
    .option('--readiness-port <port>', 'readiness port', (v) => parseInt(v, 10), 15021)
    .option('--admin-port <port>', 'admin port (localhost)', (v) => parseInt(v, 10), 15000)
    .option('--trust-domain <td>', 'SPIFFE trust domain', 'cluster.local')
    .option('--root-namespace <ns>', 'mesh root namespace (mesh-wide policies)', 'istio-system')
    .option('--xds-address <host:port>', 'control plane (TLS xDS and CA); without it captured traffic is relayed in plaintext')
    .option('--root-cert <file>', 'mesh root certificate (PEM)')
    .option('--token-file <file>', 'node credential for the control plane')
    .option('--control-server-name <name>', "name in the control plane's certificate", 'weft-control.istio-system.svc')
    .option('--cert-ttl <seconds>', 'workload certificate lifetime to request', (v) => parseInt(v, 10), 86_400)
    // Inbound HBONE (15008) admission, across all pods of the node and per source IP.
    .option('--hbone-max-connections <n>', 'open inbound HBONE connections, whole agent', positiveInt, L.maxConnections)
    .option('--hbone-max-connections-per-source <n>', 'open inbound HBONE connections from one source IP', positiveInt, L.maxConnectionsPerSource)
    .option('--hbone-max-handshakes <n>', 'inbound HBONE handshakes pending (no identity yet), whole agent', positiveInt, L.maxHandshakes)
    .option('--hbone-max-handshakes-per-source <n>', 'inbound HBONE handshakes pending from one source IP', positiveInt, L.maxHandshakesPerSource)
    .option('--hbone-handshake-timeout <ms>', 'close an inbound HBONE connection whose handshake is not done by then', positiveInt, L.handshakeTimeoutMs)
    .option('--hbone-max-dials-per-session <n>', 'CONNECTs of one inbound HBONE connection dialling at once; more get 503', positiveInt, L.maxDialsPerSession)
    // The access log also over OTLP logs (HTTP/protobuf); off unless an endpoint is given. The
    // DaemonSet sets the environment variables (headers from a Secret keep tokens out of the args).
    .addOption(new Option('--otlp-logs-endpoint <url>', 'also export the access log over OTLP logs (HTTP/protobuf) to this URL, used as given: e.g. http://otel-collector.observability:4318/v1/logs').env('WEFT_OTLP_LOGS_ENDPOINT'))
    .addOption(new Option('--otlp-logs-headers <list>', 'headers for each OTLP logs export, name=value[,name=value...] (values percent-encoded, as OTEL_EXPORTER_OTLP_HEADERS); repeatable').env('WEFT_OTLP_LOGS_HEADERS').argParser((v: string, prev?: string) => (prev ? `${prev},${v}` : v)))
    .addOption(new Option('--otlp-logs-timeout <ms>', 'deadline of one OTLP logs export, retries included').env('WEFT_OTLP_LOGS_TIMEOUT').argParser(positiveInt).default(5_000))
    .addOption(new Option('--otlp-logs-max-queue <n>', 'access-log records held for OTLP export at most; past it they are dropped (weft_agent_access_log_export_records_total{result="queue_full"})').env('WEFT_OTLP_LOGS_MAX_QUEUE').argParser(positiveInt).default(2_048))
    // Without it, an address the mesh state does not know is taken for one outside the mesh.
    .addOption(new Option('--pod-cidrs <list>', "the cluster's pod network, comma-separated CIDRs: an address in it the mesh state does not know (a pod this node has not been told about yet) is refused after a short wait, not passed through in plaintext").env('WEFT_POD_CIDRS').argParser((v: string, prev?: string[]) => {
      const list = v.split(',').map((x) => x.trim()).filter(Boolean);
      parseCidrs(list, '--pod-cidrs'); // fails the start naming the entry
      return [...(prev ?? []), ...list];
    }))
    // A stopping or replaced agent relays what is established until it ends; this bounds it.
    .addOption(new Option('--drain-deadline <seconds>', 'after SIGTERM or a handover to a new agent, close what is still relayed after this long (0: no deadline; the pod grace period bounds it on Kubernetes)').env('WEFT_DRAIN_DEADLINE').argParser((v: string) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError('a number of seconds, 0 or more');
      return n;
    }).default(0))
    .option('--kubeconfig <file>', 'Kubernetes API access: annotate enrolled pods and enroll running ones at start (as istio-cni does)')
    .option('--in-cluster', "the same with the pod's own service account")
    // Loaded when run, so other commands do not carry the agent (and the agent not the rest).
    .action(async (o) => {
      // No source maps in the agent (bin/weft.js enables them for every command): Node would
      // keep the map of every module loaded from here on, the packages' too (@grpc/grpc-js ships
      // one per file), and decode them whole into arrays the first time an error's stack is read,
      // which grpc-js does for every failed call: ~3.7 MB of heap for the agent's lifetime.
      // Stack traces name lib/ bundle lines instead (unminified, with the functions' names).
      process.setSourceMapsEnabled(false);
      const hboneLimits = {
        maxConnections: o.hboneMaxConnections as number,
        maxConnectionsPerSource: o.hboneMaxConnectionsPerSource as number,
        maxHandshakes: o.hboneMaxHandshakes as number,
        maxHandshakesPerSource: o.hboneMaxHandshakesPerSource as number,
        handshakeTimeoutMs: o.hboneHandshakeTimeout as number,
        maxDialsPerSession: o.hboneMaxDialsPerSession as number,
      };
      return (await import('../agent/main.ts')).runAgent({ ...(o as Parameters<typeof runAgent>[0]), hboneLimits });
    });
}
