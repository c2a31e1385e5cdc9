// What objects attached to a waypoint target (model/security/attachments.ts) add to its Listener:
// HTTP filters before the fault filter, network filters before the tcp_proxy, and the
// HttpConnectionManager's tracing and access log, as istiod writes them for a waypoint.
//
// Two kinds of Listener carry them:
// - a service port's (`host:port`): what targets its Service or ServiceEntry;
// - a waypoint's own (`waypoint/<ns>/<gateway>`, gatewayListenerName): what targets the Gateway.
//   The waypoint merges its own into every service port it serves (and uses it alone for traffic
//   addressed to a workload), so a Gateway-level ALLOW and a Service-level ALLOW are one set.
//
// Each contributor reads the attached objects of its kind and returns its part; they run in the
// order of CONTRIBUTORS, which is Istio's filter order: jwt_authn, then the CUSTOM action's
// ext_authz, then RBAC (AUDIT, DENY, ALLOW), then the rest. Contributors report problems naming
// the object and field, and fail closed (an ALLOW they cannot express denies).
import type { KObject } from '../../../kube/objects.ts';
import type { NsObjects } from '../../config/config-store.ts';
import type { MeshConfig } from '../../model/mesh-config.ts';
import type { NetworkingProblem } from '../../model/networking/common.ts';
import type { PortProtocol } from '../../model/networking/protocol.ts';
import type { TargetRef } from '../../model/security/attachments.ts';
import { authzContributor, authzCustomContributor } from './authz-filters.ts';
import { telemetryContributor } from './telemetry.ts';
import { requestAuthenticationContributor } from './jwt-authn.ts';

/** An HttpFilter or network Filter of a Listener: a name and its config as a google.protobuf.Any. */
export interface EnvoyFilter {
  name: string;
  typedConfig: unknown;
  /** An HTTP filter a client may skip when it does not know it (proxyless gRPC does so). */
  isOptional?: boolean;
}

export interface ListenerExtras {
  /** HttpConnectionManager.http_filters, before the fault filter. */
  httpFilters: EnvoyFilter[];
  /** Filters of the TCP chains (a TCP port's, an auto port's default chain), before tcp_proxy. */
  networkFilters: EnvoyFilter[];
  /** HttpConnectionManager.tracing (envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.Tracing). */
  tracing?: Record<string, unknown>;
  /** HttpConnectionManager.access_log entries. */
  accessLog?: Record<string, unknown>[];
}

export interface AttachContext {
  namespace: string;
  /** What the listener serves: the Gateway itself, or a Service/ServiceEntry port. */
  target: TargetRef;
  port?: { host: string; port: number; protocol: PortProtocol };
  mesh: MeshConfig;
  /** The namespace's objects, and the root namespace's (mesh-wide Telemetry and the like). */
  objects: NsObjects | undefined;
  rootObjects: NsObjects | undefined;
  trustDomain: string;
  rootNamespace: string;
  problems: NetworkingProblem[];
  /** Every service host of the mesh with its ports (a RequestAuthentication's jwksUri names one). */
  knownHosts?: ReadonlyMap<string, readonly number[]>;
}

export type Contributor = (attached: readonly KObject[], ctx: AttachContext) => Partial<ListenerExtras> | undefined;

/** In Istio's filter order (see the header). */
const CONTRIBUTORS: Contributor[] = [
  requestAuthenticationContributor,
  authzCustomContributor,
  authzContributor,
  telemetryContributor, // last: not a filter, the HCM's tracing and access log
];

export const NO_EXTRAS: ListenerExtras = { httpFilters: [], networkFilters: [] };

/** Everything the attached objects add to one Listener. */
export function listenerExtras(attached: readonly KObject[], ctx: AttachContext): ListenerExtras {
  const out: ListenerExtras = { httpFilters: [], networkFilters: [] };
  for (const c of CONTRIBUTORS) {
    const part = c(attached, ctx);
    if (!part) continue;
    out.httpFilters.push(...(part.httpFilters ?? []));
    out.networkFilters.push(...(part.networkFilters ?? []));
    if (part.tracing) out.tracing = part.tracing;
    if (part.accessLog) out.accessLog = [...(out.accessLog ?? []), ...part.accessLog];
  }
  return out;
}

/** The Listener of a waypoint's own (Gateway-targeted) configuration. */
export const gatewayListenerName = (namespace: string, gateway: string) => `waypoint/${namespace}/${gateway}`;
