// What the proxy paths need from the agent, built once in agent/main.ts before the pods: current
// mesh state (a snapshot taken per connection), the authorization engine for that snapshot,
// certificates, the HBONE pool, the data path, the telemetry sinks (all a Connection sees), and
// the pods enrolled on this node (read only; the pod manager fills that registry).
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { SpiffeId } from '../../api/spiffe.ts';
import type { CertManager } from '../../identity/index.ts';
import type { AgentMetrics } from '../metrics/metrics.ts';
import type { IstioTcpMetrics } from '../../telemetry/istio-tcp.ts';
import { AuthorizationEngine } from '../rbac/engine.ts';
import type { MeshState } from '../state/mesh-state.ts';
import type { HbonePool, HboneTunnel, PodHboneServer, PodHboneServerOptions } from '../../hbone/index.ts';
import type { RelayResult } from '../../hbone/relay.ts';
import type { AuthorizeDeps } from './authorize.ts';
import type { ConnectionSinks } from './connection.ts';
import type { LocalPodLookup } from './node-local/local-pods.ts';
import type { StateGrants } from './inbound/grants.ts';
import type { OutboundGrants } from './outbound/grants.ts';

export interface ProxyContext extends ConnectionSinks, AuthorizeDeps {
  log: Logger;
  metrics: AgentMetrics;
  istio: IstioTcpMetrics;
  trustDomain: string;
  rootNamespace: string;
  state: () => MeshState;
  /** False until the agent has mesh state (synced, or restored from the node): until then nothing is passed through. */
  synced?: () => boolean;
  engine: (state: MeshState) => AuthorizationEngine;
  /** undefined when the agent runs without a control plane (plaintext passthrough only). */
  certs?: CertManager;
  pool: HbonePool<HboneTunnel>;
  // The data path, chosen once at start (--data-path): the native relay or Node's tls and http2.
  /** Relays plaintext between two sockets (relay.ts, or the native relay's pipe). */
  relay: (down: Socket, up: Socket) => Promise<RelayResult>;
  /** Captured outbound connections are accepted on the relay thread (the native data path), not by a net.Server. */
  nativeAccept?: boolean;
  /** A pod's inbound HBONE listener. */
  serveHbone: (opts: PodHboneServerOptions) => PodHboneServer;
  /**
   * Ports the agent itself listens on (in-pod 15001/15006/15008, admin 15000/15020/15021): never a
   * destination inbound traffic may ask for (authorize.ts). DEFAULT_AGENT_PORTS when absent.
   */
  agentPorts?: ReadonlySet<number>;
  /**
   * The native data path: inbound decisions are granted to the relay for reuse under the state they
   * read (inbound/grants.ts); absent, every CONNECT is decided in JavaScript.
   */
  grants?: StateGrants;
  /** Native data path: outbound decisions the relay may reuse (outbound/grants.ts); absent, each connection is decided here. */
  outGrants?: OutboundGrants;
  /** The pods enrolled on this node, by address: their connections take the node-local fast path. */
  localPods?: LocalPodLookup;
  /**
   * The cluster's pod network (--pod-cidrs): an address in it that the state does not know is a pod
   * this node has not been told about yet, mesh or not. It waits a moment for the state, then is
   * refused: passed through, its bytes would cross the network in clear. Unset: passed through.
   */
  podNetwork?: { check(address: string, family: 'ipv4' | 'ipv6'): boolean };
}

/** How long a connection to an unknown address of the pod network waits for the state to know it. */
export const UNKNOWN_POD_WAIT_MS = 2_000;

/**
 * One engine per policy set: policies compile once, not per connection, and a snapshot that
 * changed only workloads shares its policy map with the one before (persistent maps), so it
 * keeps the engine.
 */
export function engineCache(rootNamespace: string): (s: MeshState) => AuthorizationEngine {
  let last: { policies: MeshState['policies']; engine: AuthorizationEngine } | undefined;
  return (state) => {
    if (last?.policies !== state.policies) last = { policies: state.policies, engine: new AuthorizationEngine(new Map(state.policies), rootNamespace) };
    return last.engine;
  };
}

export const podIdentity = (ctx: { trustDomain: string }, pod: { namespace: string; serviceAccount: string }): SpiffeId => ({
  trustDomain: ctx.trustDomain,
  namespace: pod.namespace,
  serviceAccount: pod.serviceAccount,
});
