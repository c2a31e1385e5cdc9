// A waypoint's parameters (Gateway spec.infrastructure.parametersRef, as Istio): a ConfigMap in the
// Gateway's namespace whose `deployment` key holds an overlay of the Deployment weft renders. Istio
// applies any strategic merge patch; weft takes a deliberately narrow subset, enough to give the
// waypoint a file and an env var naming it (a CA bundle for RequestAuthentication jwksUri servers):
//   metadata.labels / metadata.annotations, spec.replicas,
//   spec.template.metadata.labels / .annotations,
//   spec.template.spec.containers[name=istio-proxy]: env, volumeMounts (by name), resources,
//   spec.template.spec.volumes (by name; configMap, secret or emptyDir).
// Everything else is refused with its path, and so is anything that would take away what weft
// relies on: the container's args and securityContext, the token and root-cert volumes and mounts,
// automountServiceAccountToken, the labels that select and exclude the pod, the env weft sets.
// Pure and self-contained: src/kube/waypoint.ts parses and applies it in renderWaypoint.
import { parse } from 'yaml';
import { isDnsLabel, isDnsSubdomain } from './names.ts';

/** The keys of a parameters ConfigMap istiod reads; weft reads only `deployment`. */
const ISTIO_KEYS = ['deployment', 'service', 'serviceAccount', 'horizontalPodAutoscaler', 'podDisruptionBudget'];
/** The proxy container, as Istio names it. */
export const PROXY_CONTAINER = 'istio-proxy';
/** An overlay is a few lines; a bound keeps a hostile ConfigMap from costing the parser much. */
export const MAX_OVERLAY_BYTES = 64 * 1024;

type Env = { name: string; value?: string; valueFrom?: Record<string, unknown> };
type Mount = { name: string; mountPath: string; readOnly?: boolean; subPath?: string };
type Volume = { name: string; [source: string]: unknown };
export type Resources = { requests?: Record<string, string>; limits?: Record<string, string> };

/** The checked overlay: only what weft knows how to merge. */
export interface WaypointOverlay {
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  replicas?: number;
  podLabels?: Record<string, string>;
  podAnnotations?: Record<string, string>;
  env?: Env[];
  volumeMounts?: Mount[];
  volumes?: Volume[];
  resources?: Resources;
}

/** Thrown with the overlay path at fault; the caller reports it as InvalidParameters. */
export class OverlayError extends Error {}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const fail = (at: string, message: string): never => {
  throw new OverlayError(`${at}: ${message}`);
};

/** Why a field is not in the subset, where weft has a reason beyond "not supported". */
const KEPT: Record<string, string> = {
  'spec.selector': 'weft selects the pods by the gateway-name label',
  'spec.template.spec.automountServiceAccountToken': 'weft keeps it false: the waypoint reads nothing from the Kubernetes API',
  'spec.template.spec.serviceAccountName': 'the service account is the Gateway\'s (annotation gateway.istio.io/service-account)',
  'spec.template.spec.securityContext': 'weft runs the waypoint unprivileged as uid 1337',
  'spec.template.spec.initContainers': 'only the istio-proxy container may be customized',
  [`containers[${PROXY_CONTAINER}].args`]: "weft's contract with the waypoint process (its control plane, token and root certificate)",
  [`containers[${PROXY_CONTAINER}].command`]: "weft's contract with the waypoint process",
  [`containers[${PROXY_CONTAINER}].image`]: 'the control plane chooses the waypoint image',
  [`containers[${PROXY_CONTAINER}].securityContext`]: 'weft runs the waypoint unprivileged as uid 1337 (privileged false, no capabilities)',
};

/** Refuses keys outside `allowed`, naming weft's reason when it has one. */
function only(o: Record<string, unknown>, at: string, allowed: string[], keptAt = at): void {
  for (const k of Object.keys(o)) {
    const path = at ? `${at}.${k}` : k;
    if (k.startsWith('$')) fail(path, 'strategic merge patch directives are not supported by weft');
    if (allowed.includes(k)) continue;
    const why = KEPT[`${keptAt}.${k}`];
    fail(path, why ? `refused: ${why}` : `not supported by weft (supported here: ${allowed.join(', ') || 'nothing'})`);
  }
}

function stringMap(v: unknown, at: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) fail(at, 'must map strings to strings');
  return { ...(v as Record<string, string>) };
}

/** Label and annotation keys, label values, as the API server checks them (so a bad one is reported here, not as a failed write). */
const NAME_PART = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const validKey = (k: string) => {
  const [prefix, name] = k.includes('/') ? [k.slice(0, k.indexOf('/')), k.slice(k.indexOf('/') + 1)] : [undefined, k];
  return (prefix === undefined || isDnsSubdomain(prefix)) && name.length <= 63 && NAME_PART.test(name);
};
const validLabelValue = (v: string) => v === '' || (v.length <= 63 && NAME_PART.test(v));

function metadataMap(v: unknown, at: string, labels: boolean): Record<string, string> | undefined {
  const m = stringMap(v, at);
  for (const [k, x] of Object.entries(m ?? {})) {
    if (!validKey(k)) fail(`${at}["${k}"]`, 'not a valid key ([prefix/]name, name at most 63 characters)');
    if (labels && !validLabelValue(x)) fail(`${at}["${k}"]`, `${JSON.stringify(x)} is not a valid label value`);
  }
  return m;
}

function object(v: unknown, at: string): Record<string, unknown> {
  if (!isObject(v)) fail(at, 'must be an object');
  return v as Record<string, unknown>;
}

function list(v: unknown, at: string): unknown[] {
  if (!Array.isArray(v)) fail(at, 'must be a list');
  return v as unknown[];
}

/** Names unique in the list, as a merge by name needs. */
function uniqueNames<T extends { name: string }>(items: T[], at: string): T[] {
  const seen = new Set<string>();
  items.forEach((x, i) => {
    if (seen.has(x.name)) fail(`${at}[${i}].name`, `duplicate ${JSON.stringify(x.name)}`);
    seen.add(x.name);
  });
  return items;
}

const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;
const VALUE_FROM = ['fieldRef', 'configMapKeyRef', 'secretKeyRef'];

function env(v: unknown, at: string): Env[] {
  return uniqueNames(
    list(v, at).map((e, i) => {
      const f = `${at}[${i}]`;
      const o = object(e, f);
      only(o, f, ['name', 'value', 'valueFrom']);
      if (typeof o.name !== 'string' || !ENV_NAME.test(o.name) || o.name.length > 256) fail(`${f}.name`, 'required, an environment variable name');
      if (o.value !== undefined && typeof o.value !== 'string') fail(`${f}.value`, `must be a string (quote numbers), got ${JSON.stringify(o.value)}`);
      if (o.value !== undefined && o.valueFrom !== undefined) fail(f, 'value and valueFrom are exclusive');
      if (o.valueFrom !== undefined) {
        const from = object(o.valueFrom, `${f}.valueFrom`);
        const keys = Object.keys(from);
        if (keys.length !== 1 || !VALUE_FROM.includes(keys[0]!)) fail(`${f}.valueFrom`, `exactly one of ${VALUE_FROM.join(', ')}`);
        object(from[keys[0]!], `${f}.valueFrom.${keys[0]}`);
      }
      return structuredClone(o) as Env;
    }),
    at,
  );
}

const cleanPath = (p: unknown): p is string => typeof p === 'string' && p.startsWith('/') && !p.split('/').includes('..');

function mounts(v: unknown, at: string): Mount[] {
  return uniqueNames(
    list(v, at).map((m, i) => {
      const f = `${at}[${i}]`;
      const o = object(m, f);
      only(o, f, ['name', 'mountPath', 'readOnly', 'subPath']);
      if (typeof o.name !== 'string' || !isDnsLabel(o.name)) fail(`${f}.name`, 'required, a volume name');
      if (!cleanPath(o.mountPath)) fail(`${f}.mountPath`, 'required, an absolute path without ..');
      if (o.readOnly !== undefined && typeof o.readOnly !== 'boolean') fail(`${f}.readOnly`, 'must be a boolean');
      if (o.subPath !== undefined && (typeof o.subPath !== 'string' || o.subPath.startsWith('/') || o.subPath.split('/').includes('..'))) fail(`${f}.subPath`, 'must be a relative path without ..');
      return structuredClone(o) as Mount;
    }),
    at,
  );
}

/** The volume sources weft passes on: files from a ConfigMap or Secret, or scratch space. */
const SOURCES: Record<string, { required?: string; keys: string[] }> = {
  configMap: { required: 'name', keys: ['name', 'items', 'optional', 'defaultMode'] },
  secret: { required: 'secretName', keys: ['secretName', 'items', 'optional', 'defaultMode'] },
  emptyDir: { keys: ['medium', 'sizeLimit'] },
};

function volumes(v: unknown, at: string): Volume[] {
  return uniqueNames(
    list(v, at).map((x, i) => {
      const f = `${at}[${i}]`;
      const o = object(x, f);
      if (typeof o.name !== 'string' || !isDnsLabel(o.name)) fail(`${f}.name`, 'required, a DNS label');
      const sources = Object.keys(o).filter((k) => k !== 'name');
      if (sources.length !== 1 || !SOURCES[sources[0]!]) fail(f, `exactly one of ${Object.keys(SOURCES).join(', ')} (weft's subset; no hostPath), got ${sources.join(', ') || 'none'}`);
      const kind = sources[0]!;
      const src = object(o[kind], `${f}.${kind}`);
      only(src, `${f}.${kind}`, SOURCES[kind]!.keys);
      const req = SOURCES[kind]!.required;
      if (req && (typeof src[req] !== 'string' || !isDnsSubdomain(src[req]))) fail(`${f}.${kind}.${req}`, 'required, an object name');
      return structuredClone(o) as Volume;
    }),
    at,
  );
}

const QUANTITY = /^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$/;

function resources(v: unknown, at: string): Resources {
  const o = object(v, at);
  only(o, at, ['requests', 'limits']);
  const out: Resources = {};
  for (const k of ['requests', 'limits'] as const) {
    if (o[k] === undefined) continue;
    const m = stringMap(o[k], `${at}.${k}`)!;
    only(m, `${at}.${k}`, ['cpu', 'memory', 'ephemeral-storage']);
    for (const [r, q] of Object.entries(m)) if (!QUANTITY.test(q) || (r !== 'cpu' && q.endsWith('m'))) fail(`${at}.${k}.${r}`, `${JSON.stringify(q)} is not a quantity`);
    out[k] = m;
  }
  return out;
}

/** The `deployment` overlay checked against weft's subset (what weft renders is checked when it is applied). */
export function checkOverlay(doc: unknown): WaypointOverlay {
  if (doc === null || doc === undefined) return {};
  const d = object(doc, '(top)');
  only(d, '', ['metadata', 'spec']);
  const out: WaypointOverlay = {};
  if (d.metadata !== undefined) {
    const m = object(d.metadata, 'metadata');
    only(m, 'metadata', ['labels', 'annotations']);
    out.labels = metadataMap(m.labels, 'metadata.labels', true);
    out.annotations = metadataMap(m.annotations, 'metadata.annotations', false);
  }
  if (d.spec === undefined) return prune(out);
  const spec = object(d.spec, 'spec');
  only(spec, 'spec', ['replicas', 'template']);
  if (spec.replicas !== undefined) {
    if (!Number.isInteger(spec.replicas) || (spec.replicas as number) < 0) fail('spec.replicas', 'must be a non-negative integer');
    out.replicas = spec.replicas as number;
  }
  if (spec.template === undefined) return prune(out);
  const t = object(spec.template, 'spec.template');
  only(t, 'spec.template', ['metadata', 'spec']);
  if (t.metadata !== undefined) {
    const m = object(t.metadata, 'spec.template.metadata');
    only(m, 'spec.template.metadata', ['labels', 'annotations']);
    out.podLabels = metadataMap(m.labels, 'spec.template.metadata.labels', true);
    out.podAnnotations = metadataMap(m.annotations, 'spec.template.metadata.annotations', false);
  }
  if (t.spec === undefined) return prune(out);
  const ps = object(t.spec, 'spec.template.spec');
  only(ps, 'spec.template.spec', ['containers', 'volumes']);
  if (ps.volumes !== undefined) out.volumes = volumes(ps.volumes, 'spec.template.spec.volumes');
  if (ps.containers !== undefined) {
    const cs = list(ps.containers, 'spec.template.spec.containers');
    if (cs.length > 1) fail('spec.template.spec.containers', `only the ${PROXY_CONTAINER} container may be customized, once`);
    for (const [i, c] of cs.entries()) {
      const at = `spec.template.spec.containers[${i}]`;
      const o = object(c, at);
      if (o.name !== PROXY_CONTAINER) fail(`${at}.name`, `only the ${PROXY_CONTAINER} container may be customized (no other containers), got ${JSON.stringify(o.name)}`);
      only(o, at, ['name', 'env', 'volumeMounts', 'resources'], `containers[${PROXY_CONTAINER}]`);
      if (o.env !== undefined) out.env = env(o.env, `${at}.env`);
      if (o.volumeMounts !== undefined) out.volumeMounts = mounts(o.volumeMounts, `${at}.volumeMounts`);
      if (o.resources !== undefined) out.resources = resources(o.resources, `${at}.resources`);
    }
  }
  return prune(out);
}

const prune = (o: WaypointOverlay): WaypointOverlay => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as WaypointOverlay;

/**
 * The overlay a parameters ConfigMap holds: its `deployment` key parsed as YAML and checked. No
 * ConfigMap, a key weft does not read, YAML that does not parse or a field outside the subset
 * throws an OverlayError naming the ConfigMap and the field.
 */
export function overlayFromConfigMap(ref: { namespace: string; name: string }, cm: { data?: unknown } | undefined): WaypointOverlay {
  const where = `ConfigMap ${ref.namespace}/${ref.name}`;
  if (!cm) throw new OverlayError(`${where} not found`);
  const data = cm.data ?? {};
  if (!isObject(data)) throw new OverlayError(`${where}: data must map keys to strings`);
  for (const k of Object.keys(data)) {
    if (k === 'deployment') continue;
    throw new OverlayError(ISTIO_KEYS.includes(k) ? `${where}: key ${k} is not supported by weft (only deployment)` : `${where}: unknown key ${JSON.stringify(k)} (weft reads deployment)`);
  }
  const text = data.deployment;
  if (text === undefined) return {};
  if (typeof text !== 'string') throw new OverlayError(`${where}: key deployment must be a string`);
  if (Buffer.byteLength(text) > MAX_OVERLAY_BYTES) throw new OverlayError(`${where}: key deployment is larger than ${MAX_OVERLAY_BYTES} bytes`);
  let doc: unknown;
  try {
    // Aliases are refused outright: an overlay needs none, and they are how YAML bombs expand.
    doc = parse(text, { maxAliasCount: 0, uniqueKeys: true, prettyErrors: false });
  } catch (e) {
    throw new OverlayError(`${where}: key deployment is not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  try {
    return checkOverlay(doc);
  } catch (e) {
    if (e instanceof OverlayError) throw new OverlayError(`${where}: key deployment: ${e.message}`);
    throw e;
  }
}

/** A quantity in its unit's smallest step (millicores for cpu, bytes otherwise), for comparing. */
function amount(q: string): number {
  const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(q);
  if (!m) return NaN; // a form weft does not read (the operator's own defaults): not compared
  const unit = { m: 1e-3, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

/**
 * Resources after the overlay: a map merge per resource name (cpu, memory), as a strategic merge.
 * A request above its limit is refused here, as the API server would refuse the Deployment.
 */
export function overlayResources(base: Resources, overlay: WaypointOverlay | undefined): Resources {
  const r = overlay?.resources;
  if (!r) return structuredClone(base);
  const out: Resources = {
    ...((base.requests || r.requests) && { requests: { ...base.requests, ...r.requests } }),
    ...((base.limits || r.limits) && { limits: { ...base.limits, ...r.limits } }),
  };
  for (const [k, req] of Object.entries(out.requests ?? {})) {
    const lim = out.limits?.[k];
    if (lim !== undefined && amount(req) > amount(lim)) fail(`spec.template.spec.containers[name=${PROXY_CONTAINER}].resources`, `requests.${k} ${req} is above limits.${k} ${lim}`);
  }
  return out;
}

interface PodSpecLike {
  containers: { name: string; env?: Env[]; volumeMounts?: Mount[]; [k: string]: unknown }[];
  volumes?: Volume[];
  [k: string]: unknown;
}
interface DeploymentLike {
  metadata: { labels: Record<string, string>; annotations?: Record<string, string>; [k: string]: unknown };
  spec?: Record<string, unknown>;
}

/** One path is the other or below it: a mount there would shadow or replace what weft mounts. */
const overlaps = (a: string, b: string) => {
  const norm = (p: string) => p.replace(/\/+$/, '') || '/';
  const [x, y] = [norm(a), norm(b)];
  return x === y || x.startsWith(y === '/' ? '/' : `${y}/`) || y.startsWith(x === '/' ? '/' : `${x}/`);
};

/** Labels weft sets may be repeated, never changed: they select the pods and keep the node agent off them. */
function mergeLabels(base: Record<string, string>, over: Record<string, string> | undefined, at: string): Record<string, string> {
  for (const [k, v] of Object.entries(over ?? {})) if (k in base && base[k] !== v) fail(`${at}["${k}"]`, `refused: weft sets it to ${JSON.stringify(base[k])}`);
  return { ...base, ...over };
}

/**
 * The Deployment with the overlay merged in (a new object; `deployment` is not changed). What weft
 * renders stays: an env var, volume, mount or label weft sets cannot be replaced (OverlayError).
 * Resources are not merged here: the renderer merges them first so NODE_OPTIONS follows them.
 */
export function applyOverlay<D extends DeploymentLike>(deployment: D, overlay: WaypointOverlay): D {
  const d = structuredClone(deployment);
  d.metadata.labels = mergeLabels(d.metadata.labels, overlay.labels, 'metadata.labels');
  if (overlay.annotations) d.metadata.annotations = { ...d.metadata.annotations, ...overlay.annotations };
  const spec = d.spec as { replicas?: number; template: { metadata: { labels: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpecLike } };
  if (overlay.replicas !== undefined) spec.replicas = overlay.replicas;
  const tm = spec.template.metadata;
  tm.labels = mergeLabels(tm.labels, overlay.podLabels, 'spec.template.metadata.labels');
  if (overlay.podAnnotations) tm.annotations = { ...tm.annotations, ...overlay.podAnnotations };
  const pod = spec.template.spec;
  const c = pod.containers.find((x) => x.name === PROXY_CONTAINER);
  if (!c) throw new Error(`no ${PROXY_CONTAINER} container rendered`);
  const at = `spec.template.spec.containers[name=${PROXY_CONTAINER}]`;
  for (const e of overlay.env ?? []) {
    if (!c.env?.some((x) => x.name === e.name)) continue;
    fail(`${at}.env[name=${e.name}]`, e.name === 'NODE_OPTIONS' ? 'refused: weft derives it from resources.limits.memory (set resources instead)' : 'refused: set by weft');
  }
  c.env = [...(c.env ?? []), ...structuredClone(overlay.env ?? [])];
  const baseVolumes = new Set((pod.volumes ?? []).map((v) => v.name));
  for (const v of overlay.volumes ?? []) if (baseVolumes.has(v.name)) fail(`spec.template.spec.volumes[name=${v.name}]`, "refused: one of weft's volumes (the waypoint's token, the mesh root, its scratch space)");
  const known = new Set([...baseVolumes, ...(overlay.volumes ?? []).map((v) => v.name)]);
  for (const m of overlay.volumeMounts ?? []) {
    const f = `${at}.volumeMounts[name=${m.name}]`;
    if (c.volumeMounts?.some((x) => x.name === m.name)) fail(f, "refused: one of weft's mounts");
    if (!known.has(m.name) || baseVolumes.has(m.name)) fail(`${f}.name`, 'no volume of that name in the overlay\'s volumes');
    const hit = c.volumeMounts?.find((x) => overlaps(m.mountPath, x.mountPath));
    if (hit) fail(`${f}.mountPath`, `refused: ${m.mountPath} overlaps weft's mount at ${hit.mountPath}`);
    const twin = (overlay.volumeMounts ?? []).find((x) => x !== m && x.mountPath === m.mountPath);
    if (twin) fail(`${f}.mountPath`, `also the mount path of ${twin.name}`);
  }
  c.volumeMounts = [...(c.volumeMounts ?? []), ...structuredClone(overlay.volumeMounts ?? [])];
  if (overlay.volumes?.length) pod.volumes = [...(pod.volumes ?? []), ...structuredClone(overlay.volumes)];
  return d;
}
