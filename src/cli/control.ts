// `weft control`: the control plane (a Deployment in Kubernetes; one process per lab).
import type { Command } from 'commander';
import type { runControl } from '../control/main.ts';
import { analyze } from '../control/analyze.ts';
import { ConfigSnapshot } from '../control/config/config-store.ts';
import { DEFAULT_MESH } from '../control/model/networking/workloads.ts';
import { loadManifests } from '../kube/manifest.ts';

const list = (v: string, prev: string[] = []) => [...prev, v];
const ms = (flag: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 600_000) throw new Error(`${flag} ${v}: expected milliseconds, 0..600000`);
  return n;
};

export function registerControlCommand(program: Command): void {
  program
    .command('control')
    .description('run the control plane: configuration -> xDS for agents, and the mesh CA (one of --config-dir, --kubeconfig, --in-cluster)')
    .option('--config-dir <dir>', 'directory of Kubernetes YAML to watch')
    .option('--kubeconfig <file>', 'read configuration from the Kubernetes API with this kubeconfig')
    .option('--in-cluster', "read configuration from the Kubernetes API as the pod's service account")
    .option('--ca-dir <dir>', 'CA material: Istio cacerts files (plugged-in CA); with --config-dir also where the self-signed root is kept')
    .option('--ca-namespace <ns>', 'Kubernetes: namespace of the Secret istio-ca-secret that keeps the self-signed root', 'istio-system')
    .option('--trust-domain <td>', 'SPIFFE trust domain', 'cluster.local')
    .option('--node-tokens <file>', 'JSON {token: node} of node credentials (the lab); default on Kubernetes: TokenReview; with --config-dir and none, no agent is accepted (15012 and the CA refuse everyone)')
    .option('--workload-tokens <file>', 'JSON {token: "namespace/service-account"} of workload credentials (the lab\'s waypoints: their own identity from the CA, Envoy config over SotW xDS on the TLS port, never the workload API); re-read when it changes; default on Kubernetes: TokenReview of the workload\'s projected token; with --config-dir and none, the CA and xDS refuse every workload')
    .option('--agent-service-account <ns/name>', 'ServiceAccount node agents run as (TokenReview; repeatable)', list, [])
    .option('--token-audience <aud>', 'audience of the agents\' and workloads\' tokens (TokenReview)', 'istio-ca')
    .option('--plain-address <addr>', 'plaintext, unauthenticated xDS (proxyless gRPC without credentials, debugging)', '0.0.0.0:15010')
    .option('--no-plain-address', 'serve no plaintext xDS')
    .option('--tls-address <addr>', 'TLS xDS and CA', '0.0.0.0:15012')
    .option('--metrics-address <addr>', 'metrics and readiness; its /debug/ endpoints answer loopback clients only (kubectl port-forward)', '0.0.0.0:15014')
    .option('--server-name <dns>', 'DNS SAN of the control plane certificate (repeatable)', list, [])
    .option('--server-ip <ip>', 'IP SAN of the control plane certificate (repeatable)', list, [])
    .option('--root-cert-out <file>', 'write the mesh root certificate here')
    .option('--waypoint-image <image>', 'Kubernetes: deploy Gateways of class istio-waypoint (Deployment, Service, ServiceAccount) with this image')
    .option('--waypoint-control-address <host:port>', 'where deployed waypoints reach the control plane (default: the first --server-name on the TLS port)')
    .option('--reuse-port', 'listen with SO_REUSEPORT, so a second replica on this host can bind the same addresses (a rolling upgrade in place)')
    .option('--drain-spread-ms <ms>', 'on SIGTERM, end the xDS streams spread over this long, so clients do not all reconnect at once', ms('--drain-spread-ms'), 2000)
    .option('--drain-deadline-ms <ms>', 'on SIGTERM, exit after at most this long (keep it below the pod\'s terminationGracePeriodSeconds)', ms('--drain-deadline-ms'), 10_000)
    .option('--no-leader-election', 'Kubernetes: run the leader-only duties (root-cert ConfigMaps, waypoint deployments) without holding the Lease (a single replica)')
    .option('--leader-lease <name>', 'Kubernetes: the Lease (in --ca-namespace) replicas elect the leader with', 'weft-control-leader')
    .action(
      async (
        o: Omit<Parameters<typeof runControl>[0], 'serverNames' | 'serverIps' | 'agentServiceAccounts' | 'tokenAudiences'> & {
          serverName: string[];
          serverIp: string[];
          agentServiceAccount: string[];
          tokenAudience: string;
        },
      ) => {
        const { serverName, serverIp, agentServiceAccount, tokenAudience, ...rest } = o;
        const { runControl } = await import('../control/main.ts'); // loaded only when run
        await runControl({
          ...rest,
          serverNames: serverName.length ? serverName : ['weft-control.istio-system.svc'],
          serverIps: serverIp,
          agentServiceAccounts: agentServiceAccount.length ? agentServiceAccount : ['istio-system/weft-agent'],
          tokenAudiences: [tokenAudience],
        });
      },
    );
}

/** `weft analyze`: what the control plane would report for a configuration, without running it. */
export function registerAnalyzeCommand(program: Command): void {
  program
    .command('analyze')
    .description('check a directory of Kubernetes YAML the way the control plane does, and print every problem')
    .argument('[paths...]', 'files or directories', ['.'])
    .option('--trust-domain <td>', 'SPIFFE trust domain', 'cluster.local')
    .action((paths: string[], o: { trustDomain: string }) => {
      const loaded = loadManifests(paths, { runnable: false });
      const snap = ConfigSnapshot.of(loaded.objects, loaded.problems);
      const { problems } = analyze(snap, { ...DEFAULT_MESH, trustDomain: o.trustDomain });
      for (const p of problems) console.log(p);
      console.error(`${problems.length} problem(s); ${snap.objects.length} valid object(s)`);
      if (problems.length) process.exitCode = 1;
    });
}
