// Istio's mesh configuration: the `mesh` key of the ConfigMap `istio` in the root namespace, YAML
// of istio.mesh.v1alpha1.MeshConfig. weft reads the parts the waypoint and the agents act on:
// `extensionProviders` (external authorizers for CUSTOM policies, tracing and log exporters) and
// `defaultProviders`. Each provider is kept with its kind and raw spec; the translator that uses a
// kind checks its fields (a provider nobody names is never checked, as in istiod). A ConfigMap that
// does not parse gives no providers and a problem: policies naming one then fail closed.
import { parse } from 'yaml';
import type { KObject } from '../../kube/objects.ts';
import { ofKind, type ConfigSnapshot } from '../config/config-store.ts';
import type { NetworkingProblem as ModelProblem } from './networking/common.ts';

export const MESH_CONFIGMAP = 'istio';
export const MESH_CONFIG_KEY = 'mesh';

/** The provider kinds of MeshConfig.ExtensionProvider weft knows (others are reported). */
export const PROVIDER_KINDS = ['envoyExtAuthzHttp', 'envoyExtAuthzGrpc', 'opentelemetry', 'envoyOtelAls', 'envoyFileAccessLog', 'zipkin', 'prometheus'] as const;
export type ProviderKind = (typeof PROVIDER_KINDS)[number];

export interface ExtensionProvider {
  name: string;
  kind: ProviderKind;
  /** The provider's own object (e.g. the `envoyExtAuthzGrpc` value), unchecked. */
  spec: Record<string, unknown>;
  /** Where it is, for problems: `data.mesh: extensionProviders[2]`. */
  field: string;
}

export interface MeshConfig {
  extensionProviders: ReadonlyMap<string, ExtensionProvider>;
  /** MeshConfig.defaultProviders: provider names per signal. */
  defaultProviders: { tracing: string[]; accessLogging: string[]; metrics: string[] };
  /** defaultConfig.tracing.sampling: the percentage sampled when Telemetry sets none. */
  tracingSampling?: number;
  /** Problems of the ConfigMap itself, reported against it. */
  problems: ModelProblem[];
  /** The ConfigMap read (identity: unchanged while the same object). */
  source?: KObject;
}

export const EMPTY_MESH_CONFIG: MeshConfig = { extensionProviders: new Map(), defaultProviders: { tracing: [], accessLogging: [], metrics: [] }, problems: [] };

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

const read = new WeakMap<KObject, MeshConfig>();

/** The mesh configuration in force in a snapshot (the same object while its ConfigMap is). */
export function meshConfigOf(snap: ConfigSnapshot, rootNamespace: string): MeshConfig {
  const cm = ofKind(snap.namespaces.get(rootNamespace), 'ConfigMap').find((o) => o.metadata.name === MESH_CONFIGMAP);
  if (!cm) return EMPTY_MESH_CONFIG;
  let config = read.get(cm);
  if (!config) read.set(cm, (config = readMeshConfig(cm)));
  return config;
}

/** Reads one `istio` ConfigMap. */
export function readMeshConfig(cm: KObject): MeshConfig {
  const problems: ModelProblem[] = [];
  const at = (field: string, reason: string) => problems.push({ kind: 'ConfigMap', namespace: cm.metadata.namespace ?? '', name: cm.metadata.name, field, reason });
  const data = (cm as KObject & { data?: unknown }).data;
  const text = isObj(data) ? data[MESH_CONFIG_KEY] : undefined;
  if (text === undefined) return { ...EMPTY_MESH_CONFIG, problems, source: cm };
  let mesh: unknown;
  try {
    mesh = typeof text === 'string' ? parse(text) : undefined;
  } catch (e) {
    at(`data.${MESH_CONFIG_KEY}`, `not YAML: ${(e as Error).message.split('\n')[0]}: no extension providers (policies naming one fail closed)`);
    return { ...EMPTY_MESH_CONFIG, problems, source: cm };
  }
  if (mesh === null || mesh === undefined) return { ...EMPTY_MESH_CONFIG, problems, source: cm };
  if (!isObj(mesh)) {
    at(`data.${MESH_CONFIG_KEY}`, 'expected a MeshConfig object: no extension providers (policies naming one fail closed)');
    return { ...EMPTY_MESH_CONFIG, problems, source: cm };
  }
  const providers = new Map<string, ExtensionProvider>();
  const list = mesh.extensionProviders;
  if (list !== undefined && !Array.isArray(list)) at(`data.${MESH_CONFIG_KEY}: extensionProviders`, 'expected a list');
  for (const [i, p] of (Array.isArray(list) ? list : []).entries()) {
    const field = `data.${MESH_CONFIG_KEY}: extensionProviders[${i}]`;
    if (!isObj(p) || typeof p.name !== 'string' || !p.name) {
      at(field, 'expected an object with a name: ignored');
      continue;
    }
    const kinds = Object.keys(p).filter((k) => k !== 'name');
    if (kinds.length !== 1) {
      at(field, `provider ${p.name}: expected exactly one provider kind, found ${kinds.length ? kinds.join(', ') : 'none'}: ignored`);
      continue;
    }
    const kind = kinds[0]!;
    if (!(PROVIDER_KINDS as readonly string[]).includes(kind) || !isObj(p[kind])) {
      at(`${field}.${kind}`, `provider ${p.name}: ${isObj(p[kind]) ? 'kind not supported by weft' : 'expected an object'}: ignored`);
      continue;
    }
    if (providers.has(p.name)) at(field, `provider ${p.name}: a second provider of this name: ignored (the first is kept)`);
    else providers.set(p.name, { name: p.name, kind: kind as ProviderKind, spec: p[kind] as Record<string, unknown>, field: `${field}.${kind}` });
  }
  const dp = isObj(mesh.defaultProviders) ? mesh.defaultProviders : {};
  const names = (k: string) => (Array.isArray(dp[k]) ? (dp[k] as unknown[]).filter((x): x is string => typeof x === 'string') : []);
  const tracing = isObj(mesh.defaultConfig) && isObj(mesh.defaultConfig.tracing) ? mesh.defaultConfig.tracing : {};
  let tracingSampling: number | undefined;
  if (tracing.sampling !== undefined) {
    if (typeof tracing.sampling === 'number' && tracing.sampling >= 0 && tracing.sampling <= 100) tracingSampling = tracing.sampling;
    else at(`data.${MESH_CONFIG_KEY}: defaultConfig.tracing.sampling`, `${String(tracing.sampling)} is not a percentage (0 to 100): Istio's default applies`);
  }
  return {
    extensionProviders: providers,
    defaultProviders: { tracing: names('tracing'), accessLogging: names('accessLogging'), metrics: names('metrics') },
    ...(tracingSampling !== undefined && { tracingSampling }),
    problems,
    source: cm,
  };
}
