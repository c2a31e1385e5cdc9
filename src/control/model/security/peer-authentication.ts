// security.istio.io PeerAuthentication -> L4 DENY policies, the way istiod does it for ambient.
//
// Representation: PeerAuthentications are not turned into scoped policies one by one, because a
// workload-level PERMISSIVE must be able to override a namespace or mesh STRICT and a DENY can't
// be overridden. Instead the control plane resolves, per workload, the effective mode from the
// oldest mesh (root namespace, no selector), namespace and workload (selector) objects
// (`effectivePeerAuthn`), and lists on that workload at most one WORKLOAD_SELECTOR DENY policy:
// - effectively STRICT on every port: `<root>/istio_converted_static_strict`, shared by all;
// - port-level exceptions: `<ns>/istio_converted_peer_authn_<name>`, named after the deciding
//   workload-level object (its namespace and mesh parents are the same for every workload it
//   selects, so one policy per object is exact). STRICT with PERMISSIVE ports excludes them via
//   notDestinationPorts; PERMISSIVE with STRICT ports lists them in destinationPorts.
// Both match connections without a principal (notPrincipals: [presence]). Underscores are illegal
// in Kubernetes names, so these never collide with user policies. Ports are the workload's
// (target) ports, which is what the agent sees. DISABLE counts as PERMISSIVE: plaintext is
// accepted and HBONE stays mTLS.
//
// Fail closed: an object with any problem (unknown field, unknown mode, bad port, portLevelMtls
// without a selector, unreadable selector) is enforced as STRICT on all ports at its level.
import type { AuthorizationPolicy } from '../../../api/mesh.ts';
import { DEFAULT_ROOT_NAMESPACE, isObj, readMeta, readSelector, toPort, unknownKeys, type Problem, type TranslateOptions } from './authz-common.ts';

export type MtlsMode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

export interface PeerAuthn {
  name: string;
  namespace: string;
  level: 'MESH' | 'NAMESPACE' | 'WORKLOAD';
  selector?: Record<string, string>;
  mode: MtlsMode;
  portLevel: { port: number; mode: MtlsMode }[];
  /** RFC 3339 from metadata; the oldest object of a level wins, as in Istio. */
  creationTimestamp: string;
}

export interface PeerAuthnTranslation {
  peerAuthn?: PeerAuthn;
  problems: Problem[];
}

export const STATIC_STRICT_POLICY_NAME = 'istio_converted_static_strict';
export const convertedPeerAuthnName = (name: string) => `istio_converted_peer_authn_${name}`;

const MODES: readonly MtlsMode[] = ['UNSET', 'DISABLE', 'PERMISSIVE', 'STRICT'];

export function translatePeerAuthentication(obj: unknown, opts: TranslateOptions = {}): PeerAuthnTranslation {
  const rootNamespace = opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
  const problems: Problem[] = [];
  const read = readMeta(obj, 'PeerAuthentication', problems);
  if (!read) return { problems };
  const { meta } = read;
  const spec = read.spec ?? {};
  const start = problems.length;
  let selector: Record<string, string> | undefined;
  let mode: MtlsMode = 'UNSET';
  const portLevel: PeerAuthn['portLevel'] = [];
  if (!isObj(spec)) problems.push({ field: 'spec', reason: 'expected an object' });
  else {
    unknownKeys(spec, ['selector', 'mtls', 'portLevelMtls'], 'spec', problems);
    const sel = readSelector(spec.selector, 'spec.selector', problems);
    if (sel.labels && Object.keys(sel.labels).length) selector = sel.labels;
    mode = readMtls(spec.mtls, 'spec.mtls', problems);
    if (spec.portLevelMtls !== undefined) {
      if (!isObj(spec.portLevelMtls)) problems.push({ field: 'spec.portLevelMtls', reason: 'expected a map of port to mtls' });
      else if (!selector) problems.push({ field: 'spec.portLevelMtls', reason: 'requires a selector' });
      else
        for (const [k, v] of Object.entries(spec.portLevelMtls)) {
          const port = toPort(k);
          if (port === undefined) problems.push({ field: `spec.portLevelMtls.${k}`, reason: 'invalid port' });
          else portLevel.push({ port, mode: readMtls(v, `spec.portLevelMtls.${k}`, problems) });
        }
    }
  }
  const failed = problems.length > start;
  for (const p of problems.slice(start)) p.reason += ': the object is enforced as STRICT on all ports';
  const level = selector ? 'WORKLOAD' : meta.namespace === rootNamespace ? 'MESH' : 'NAMESPACE';
  const peerAuthn: PeerAuthn = {
    name: meta.name,
    namespace: meta.namespace,
    level,
    ...(selector ? { selector } : {}),
    mode: failed ? 'STRICT' : mode,
    portLevel: failed ? [] : portLevel,
    creationTimestamp: meta.creationTimestamp,
  };
  return { peerAuthn, problems };
}

function readMtls(v: unknown, path: string, problems: Problem[]): MtlsMode {
  if (v === undefined || v === null) return 'UNSET';
  if (!isObj(v)) {
    problems.push({ field: path, reason: 'expected an object' });
    return 'STRICT';
  }
  unknownKeys(v, ['mode'], path, problems);
  const m = v.mode ?? 'UNSET';
  if (MODES.includes(m as MtlsMode)) return m as MtlsMode;
  problems.push({ field: `${path}.mode`, reason: `unknown mode ${JSON.stringify(m)}` });
  return 'STRICT';
}

/** Denies connections without a peer identity (plaintext) to the workloads that list it. */
export function staticStrictPolicy(rootNamespace = DEFAULT_ROOT_NAMESPACE): AuthorizationPolicy {
  return strictDeny(STATIC_STRICT_POLICY_NAME, rootNamespace, {});
}

function strictDeny(name: string, namespace: string, ports: { destinationPorts?: number[]; notDestinationPorts?: number[] }): AuthorizationPolicy {
  return { name, namespace, scope: 'WORKLOAD_SELECTOR', action: 'DENY', rules: [{ clauses: [{ matches: [{ notPrincipals: [{ presence: {} }], ...ports }] }] }] };
}

export interface EffectivePeerAuthn {
  /** Mode of every port without its own setting. */
  mode: 'STRICT' | 'PERMISSIVE';
  /** Ports whose mode is the other one, ascending. */
  portExceptions: number[];
  /** The DENY policy to list on the workload (and to publish), if any. */
  policy?: AuthorizationPolicy;
}

const binary = (m: MtlsMode): 'STRICT' | 'PERMISSIVE' | undefined => (m === 'UNSET' ? undefined : m === 'STRICT' ? 'STRICT' : 'PERMISSIVE');

const oldest = (list: PeerAuthn[]) =>
  list.reduce<PeerAuthn | undefined>((best, p) => (!best || p.creationTimestamp < best.creationTimestamp || (p.creationTimestamp === best.creationTimestamp && p.name < best.name) ? p : best), undefined);

const selects = (sel: Record<string, string> | undefined, labels: Record<string, string>) => !!sel && Object.entries(sel).every(([k, v]) => labels[k] === v);

/** The effective mTLS mode of one workload, and the policy that enforces it. */
export function effectivePeerAuthn(workload: { namespace: string; labels: Record<string, string> }, all: readonly PeerAuthn[], rootNamespace = DEFAULT_ROOT_NAMESPACE): EffectivePeerAuthn {
  const mesh = oldest(all.filter((p) => p.level === 'MESH' && p.namespace === rootNamespace));
  const ns = oldest(all.filter((p) => p.level === 'NAMESPACE' && p.namespace === workload.namespace));
  const wl = oldest(all.filter((p) => p.level === 'WORKLOAD' && p.namespace === workload.namespace && selects(p.selector, workload.labels)));
  // Most specific set mode wins; nothing set anywhere is PERMISSIVE (Istio's default).
  const mode = binary(wl?.mode ?? 'UNSET') ?? binary(ns?.mode ?? 'UNSET') ?? binary(mesh?.mode ?? 'UNSET') ?? 'PERMISSIVE';
  const portExceptions = [...new Set((wl?.portLevel ?? []).filter((p) => (binary(p.mode) ?? mode) !== mode).map((p) => p.port))].sort((a, b) => a - b);
  if (!portExceptions.length) return mode === 'STRICT' ? { mode, portExceptions, policy: staticStrictPolicy(rootNamespace) } : { mode, portExceptions };
  const ports = mode === 'STRICT' ? { notDestinationPorts: portExceptions } : { destinationPorts: portExceptions };
  return { mode, portExceptions, policy: strictDeny(convertedPeerAuthnName(wl!.name), wl!.namespace, ports) };
}
