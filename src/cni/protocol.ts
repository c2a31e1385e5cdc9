// The CNI protocol as a plugin sees it (CNI spec 1.0, with the 0.3/0.4 and 1.1 versions a
// runtime may still or already use): the command and container in environment variables, the
// network configuration (with prevResult when chained) on stdin, a result or an error on stdout.

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;

/** Well-known error codes from the spec; 100+ are the plugin's own. */
export const ERR = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  io: 5,
  decode: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  /** The agent refused or failed to enroll the pod. */
  enrollRefused: 100,
  /** The pod's labels could not be read. */
  podLookup: 101,
  /** The pod should be captured but the agent does not have it (CHECK). */
  notEnrolled: 102,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }
}

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'GC' | 'STATUS';

export interface CniEnv {
  command: CniCommand;
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS as key=value pairs; Kubernetes runtimes pass K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID. */
  args: Record<string, string>;
}

/** The part of a CNI result weft reads; the rest is passed through untouched. */
export interface CniResult {
  cniVersion?: string;
  interfaces?: unknown[];
  ips?: { address: string; gateway?: string; interface?: number; version?: string }[];
  [k: string]: unknown;
}

/** weft-cni's entry in a conflist (written by `weft cni-install`). */
export interface WeftCniConf {
  cniVersion: string;
  name: string;
  type: string;
  /** kubeconfig the plugin reads pods and namespaces with. */
  kubeconfig: string;
  /** The agent's enrollment socket. */
  agentSocket: string;
  /** Pods of these namespaces are never enrolled and cost no API call (kube-system, the mesh's own). */
  excludeNamespaces?: string[];
  /** Where cgroup v2 is mounted on the node; found in /proc/self/mountinfo when unset. */
  cgroupRoot?: string;
  /** Milliseconds to wait for the agent to have the pod captured. */
  enrollTimeoutMs?: number;
  prevResult?: CniResult;
  runtimeConfig?: unknown;
}

export function parseArgs(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of (s ?? '').split(';')) {
    const i = kv.indexOf('=');
    if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

export function parseEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = env.CNI_COMMAND;
  if (!command || !['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'].includes(command)) {
    throw new CniError(ERR.invalidEnv, `unknown CNI_COMMAND: ${command ?? '(unset)'}`);
  }
  const need = (k: string): string => {
    const v = env[k];
    if (!v) throw new CniError(ERR.invalidEnv, `${k} is required for ${command}`);
    return v;
  };
  const perContainer = command === 'ADD' || command === 'DEL' || command === 'CHECK';
  return {
    command: command as CniCommand,
    containerId: perContainer ? need('CNI_CONTAINERID') : '',
    // DEL may come without a netns (already gone); ADD and CHECK need one.
    netns: command === 'ADD' || command === 'CHECK' ? need('CNI_NETNS') : (env.CNI_NETNS ?? ''),
    ifname: perContainer ? need('CNI_IFNAME') : '',
    args: parseArgs(env.CNI_ARGS),
  };
}

const versionParts = (v: string) => v.split('.').map((n) => parseInt(n, 10));
export const versionAtLeast = (v: string, min: string) => {
  const [a, b] = [versionParts(v), versionParts(min)];
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
};

export function parseConf(stdin: string, command: CniCommand): WeftCniConf {
  let v: unknown;
  try {
    v = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(ERR.decode, `network configuration on stdin is not JSON: ${(e as Error).message}`);
  }
  const c = v as Partial<WeftCniConf> | null;
  if (!c || typeof c !== 'object' || Array.isArray(c)) throw new CniError(ERR.decode, 'network configuration on stdin is not a JSON object');
  if (typeof c.cniVersion !== 'string') throw new CniError(ERR.invalidConfig, 'network configuration has no cniVersion');
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(c.cniVersion)) {
    throw new CniError(ERR.incompatibleVersion, `CNI version ${c.cniVersion} is not supported`, `supported: ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  if (command === 'VERSION') return c as WeftCniConf;
  if (command === 'CHECK' && !versionAtLeast(c.cniVersion, '0.4.0')) throw new CniError(ERR.incompatibleVersion, `CHECK needs CNI version 0.4.0 or later, not ${c.cniVersion}`);
  for (const k of ['kubeconfig', 'agentSocket'] as const) {
    if (typeof c[k] !== 'string' || !c[k]) throw new CniError(ERR.invalidConfig, `weft-cni configuration: "${k}" is required`);
  }
  if (c.excludeNamespaces !== undefined && (!Array.isArray(c.excludeNamespaces) || c.excludeNamespaces.some((n) => typeof n !== 'string'))) {
    throw new CniError(ERR.invalidConfig, 'weft-cni configuration: "excludeNamespaces" must be a list of names');
  }
  return c as WeftCniConf;
}

export function versionResult(cniVersion: string | undefined): string {
  return JSON.stringify({ cniVersion: cniVersion ?? SUPPORTED_VERSIONS.at(-1), supportedVersions: SUPPORTED_VERSIONS });
}

export function errorResult(cniVersion: string | undefined, e: unknown): string {
  const err = e instanceof CniError ? e : new CniError(999, (e as Error)?.message ?? String(e));
  return JSON.stringify({ cniVersion: cniVersion ?? SUPPORTED_VERSIONS.at(-1), code: err.code, msg: err.message, ...(err.details && { details: err.details }) });
}

/** The pod addresses a previous plugin assigned (CIDR notation in results), without prefix length. */
export function resultIps(r: CniResult | undefined): string[] {
  return (r?.ips ?? []).map((ip) => ip.address.split('/')[0]!).filter(Boolean);
}
