// Where the waypoint decides, before any byte is relayed, whether a connection to a TCP port may
// go on (Istio's L4 AuthorizationPolicy at a waypoint: source principal, namespace and IP,
// destination port). Evaluated once per tunnel at CONNECT, so a refusal is the CONNECT's 401 (as
// ztunnel answers) and nothing is dialled. The waypoint does not receive AuthorizationPolicies yet (issue #15): with no
// policy bound to it there is nothing to deny, which is what Istio does too. When it does, the
// rules engine the node agent uses (src/agent/proxy/authorize.ts) moves to a shared library and
// is called here; the agent's module cannot be imported from the waypoint.
import type { Service } from '../../api/mesh.ts';

export interface L4Request {
  /** The authenticated HBONE peer (the source's SPIFFE id). */
  peerPrincipal: string;
  /** The source address the tunnel came from. */
  peerAddress: string;
  service: Service;
  port: number;
}

export type L4Verdict = { allow: true } | { allow: false; reason: string; policy?: string };

export type L4Policy = (r: L4Request) => L4Verdict;

/** No AuthorizationPolicy binds the waypoint: every connection goes on. */
export const NO_L4_POLICY: L4Policy = () => ({ allow: true });
