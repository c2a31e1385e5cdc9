// What `weft install` can change. The committed daemonset/ files are the rendering of DEFAULTS.

import { parseCidrs } from '../util/cidrs.ts';
export type CaSource = 'self-signed' | 'plugged';

export interface InstallOptions {
  /** Namespace of the control plane, the agents and the mesh root (policies there are mesh-wide). */
  namespace: string;
  /** One image for the control plane, the agent and the CNI installer (entrypoint `node bin/weft.js`). */
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  /** SPIFFE trust domain of workload identities. */
  trustDomain: string;
  /** self-signed: the control plane makes its own root; plugged: an Istio `cacerts` secret. */
  caSource: CaSource;
  /** Name of the Istio-layout CA secret (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem). */
  cacertsSecret: string;
  /** The nodes' CNI directories (distributions differ: k3s, GKE and others move them). */
  cniBinDir: string;
  cniConfDir: string;
  /**
   * Serve xDS in plaintext on 15010 (Service port grpc-xds), for proxyless gRPC clients that hold
   * no node credential. Off by default: it gives every workload, identity and policy of the mesh
   * to any pod that asks. Agents always use 15012 (TLS, authenticated).
   */
  plaintextXds: boolean;
  /**
   * The agents also export their access log over OTLP logs (HTTP/protobuf) to this URL, e.g.
   * http://otel-collector.observability:4318/v1/logs (WEFT_OTLP_LOGS_ENDPOINT). Empty: off.
   */
  otlpLogsEndpoint: string;
  /**
   * The cluster's pod network (comma-separated CIDRs, WEFT_POD_CIDRS): agents refuse an address in
   * it that their state does not know instead of passing it through in plaintext. Empty: off.
   */
  podCidrs: string;
}

export const DEFAULTS: Readonly<InstallOptions> = Object.freeze({
  namespace: 'istio-system',
  image: 'weft:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  trustDomain: 'cluster.local',
  caSource: 'self-signed',
  cacertsSecret: 'cacerts',
  cniBinDir: '/opt/cni/bin',
  cniConfDir: '/etc/cni/net.d',
  plaintextXds: false,
  otlpLogsEndpoint: '',
  podCidrs: '',
});

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Fills in defaults and rejects values Kubernetes (or SPIFFE) would reject later, naming the flag. */
export function resolveOptions(partial: Partial<InstallOptions> = {}): InstallOptions {
  const o: InstallOptions = { ...DEFAULTS, ...Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined)) };
  if (!DNS_LABEL.test(o.namespace)) throw new Error(`--namespace ${JSON.stringify(o.namespace)}: not a DNS label (lowercase letters, digits, '-', at most 63)`);
  if (!o.image || /\s/.test(o.image)) throw new Error(`--image ${JSON.stringify(o.image)}: not an image reference`);
  if (!DNS_SUBDOMAIN.test(o.trustDomain)) throw new Error(`--trust-domain ${JSON.stringify(o.trustDomain)}: not a SPIFFE trust domain (lowercase DNS name)`);
  if (o.caSource !== 'self-signed' && o.caSource !== 'plugged') throw new Error(`--ca-source ${JSON.stringify(o.caSource)}: self-signed or plugged`);
  if (!DNS_SUBDOMAIN.test(o.cacertsSecret)) throw new Error(`--cacerts-secret ${JSON.stringify(o.cacertsSecret)}: not a Secret name`);
  if (!['Always', 'IfNotPresent', 'Never'].includes(o.imagePullPolicy)) throw new Error(`--image-pull-policy ${JSON.stringify(o.imagePullPolicy)}: Always, IfNotPresent or Never`);
  for (const [flag, dir] of [['--cni-bin-dir', o.cniBinDir], ['--cni-conf-dir', o.cniConfDir]] as const) {
    if (!dir.startsWith('/') || dir.includes('..')) throw new Error(`${flag} ${JSON.stringify(dir)}: an absolute path on the node`);
  }
  if (o.otlpLogsEndpoint && !/^https?:\/\/[^\s/]+(\/\S*)?$/.test(o.otlpLogsEndpoint)) throw new Error(`--otlp-logs-endpoint ${JSON.stringify(o.otlpLogsEndpoint)}: an http:// or https:// URL`);
  if (o.podCidrs) parseCidrs(o.podCidrs.split(','), '--pod-cidrs');
  return o;
}
