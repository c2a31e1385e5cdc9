// The handover between a running agent and the one replacing it on the same node (an upgrade), on
// a root-only Unix socket next to the enrollment socket. The new agent asks; the old one stops
// changing its pods, then sends its listening sockets (SCM_RIGHTS, src/bpf/fd-passing.ts): each
// pod's 15001/15006/15008, then the node's enrollment socket and admin listeners. The new agent
// serves on the same sockets (nothing is ever closed, so no connection is refused or reset), then
// says `ready`; only then does the old one stop accepting and drain what it relays. If the new
// agent fails or goes away before `ready`, the old one carries on as if nothing happened.
//
//   new -> old  {type: take, pid}
//   old -> new  {type: begin, pid, pods}  then per pod {type: pod, info, roles} + fds,
//               then {type: node, roles} + fds, then {type: end}
//   new -> old  {type: ready} | {type: abort, reason}
import type { PodInfo } from '../../api/enrollment.ts';

export const HANDOVER_VERSION = 1;
/** The socket's name in the agent's state directory (a hostPath on Kubernetes). */
export const HANDOVER_SOCKET = 'handover.sock';

/** A pod's listening sockets, by what they serve. */
export const POD_LISTENER_ROLES = ['outbound4', 'inbound4', 'outbound6', 'inbound6', 'hbone'] as const;
export type PodListenerRole = (typeof POD_LISTENER_ROLES)[number];
/** The node's: the enrollment socket and the admin endpoints (15020, 15021, 15000). */
export const NODE_LISTENER_ROLES = ['enrollment', 'metrics', 'readiness', 'admin'] as const;
export type NodeListenerRole = (typeof NODE_LISTENER_ROLES)[number];

export type PodListenerFds = Partial<Record<PodListenerRole, number>>;
export type NodeListenerFds = Partial<Record<NodeListenerRole, number>>;

export type NewToOld = { type: 'take'; version: number; pid: number } | { type: 'ready' } | { type: 'abort'; reason: string };
export type OldToNew =
  | { type: 'begin'; version: number; pid: number; pods: number }
  | { type: 'pod'; info: PodInfo; roles: PodListenerRole[] }
  | { type: 'node'; roles: NodeListenerRole[] }
  | { type: 'end' }
  | { type: 'refused'; reason: string };

/** Pairs roles with the fds that came with them; a count mismatch or unknown role is an error. */
export function pairRoles<R extends string>(roles: unknown, fds: number[], known: readonly R[], what: string): Partial<Record<R, number>> {
  if (!Array.isArray(roles) || roles.length !== fds.length) throw new Error(`handover: ${what} names ${Array.isArray(roles) ? roles.length : 'no'} sockets but ${fds.length} came`);
  const out: Partial<Record<R, number>> = {};
  roles.forEach((r, i) => {
    if (!known.includes(r as R)) throw new Error(`handover: ${what}: unknown socket role ${JSON.stringify(r)}`);
    if (out[r as R] !== undefined) throw new Error(`handover: ${what}: socket role ${r} twice`);
    out[r as R] = fds[i];
  });
  return out;
}

/** Roles and fds of a listener map, in the same order. */
export function splitRoles<R extends string>(m: Partial<Record<R, number>>): { roles: R[]; fds: number[] } {
  const entries = Object.entries(m).filter(([, fd]) => typeof fd === 'number') as [R, number][];
  return { roles: entries.map(([r]) => r), fds: entries.map(([, fd]) => fd) };
}
