// What every proxied connection needs from the agent: current mesh state (a snapshot taken per
// connection), the authorization engine for that snapshot, certificates, the HBONE pool, and the
// telemetry sinks.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { SpiffeId } from '../../api/spiffe.ts';
import type { CertManager } from '../../identity/index.ts';
import type { AgentMetrics } from '../metrics/metrics.ts';
import type { IstioTcpMetrics } from '../metrics/istio.ts';
import { AuthorizationEngine } from '../rbac/engine.ts';
import type { MeshState } from '../state/mesh-state.ts';
import type { HbonePool, HboneTunnel, PodHboneServer, PodHboneServerOptions } from '../../hbone/index.ts';
import type { ProxyPod } from './outbound.ts';
import type { RelayResult } from '../../hbone/relay.ts';

export interface ProxyContext {
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
  /** A pod's inbound HBONE listener. */
  serveHbone: (opts: PodHboneServerOptions) => PodHboneServer;
  /**
   * Ports the agent itself listens on (in-pod 15001/15006/15008, admin 15000/15020/15021): never a
   * destination inbound traffic may ask for (inbound.ts). DEFAULT_AGENT_PORTS when absent.
   */
  agentPorts?: ReadonlySet<number>;
  /** The pod enrolled on this node that holds an address: its connections take the node-local fast path. */
  localPod?: (ip: string) => ProxyPod | undefined;
}

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

export const podIdentity = (ctx: ProxyContext, pod: { namespace: string; serviceAccount: string }): SpiffeId => ({
  trustDomain: ctx.trustDomain,
  namespace: pod.namespace,
  serviceAccount: pod.serviceAccount,
});
