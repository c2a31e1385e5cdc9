// Reads Kubernetes YAML (files, directories, multi-document streams, `List`s) and validates the
// kinds weft reads: the lab's objects and the mesh configuration the control plane takes from a
// directory or the API. Every problem names the file, the object and the field; an invalid object is
// reported and left out while every valid one is kept.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { isNamespaced, type Container, type KObject } from './objects.ts';
import { DNS1123_LABEL, DNS1123_SUBDOMAIN } from './names.ts';

export interface ManifestProblem {
  file: string;
  object: string; // "Kind ns/name", or "document N" when it has no identity yet
  field: string;
  reason: string;
}

export const formatProblem = (p: ManifestProblem) => `${p.file}: ${p.object}: ${p.field ? p.field + ': ' : ''}${p.reason}`;

export interface LoadResult {
  objects: (KObject & { __source?: string })[];
  problems: ManifestProblem[];
}


/** Expands files and directories (sorted, *.yaml|*.yml|*.json, not recursive into dot-dirs). */
export function expandPaths(paths: string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    const st = statSync(p); // throws ENOENT naming the path: the caller reports it
    if (st.isDirectory()) {
      for (const e of readdirSync(p).sort()) {
        if (e.startsWith('.')) continue;
        const full = join(p, e);
        if (statSync(full).isDirectory()) out.push(...expandPaths([full]));
        else if (/\.(ya?ml|json)$/.test(e)) out.push(full);
      }
    } else out.push(p);
  }
  return out;
}

/**
 * `runnable`: the lab will run these objects, so its own limits apply (a command or a built-in
 * image, TCP ClusterIP services, the env and probe forms it implements). The control plane reads
 * objects that run elsewhere (a cluster's API server admitted them) and turns that off.
 */
export interface LoadOptions {
  defaultNamespace?: string;
  runnable?: boolean;
}

export function loadManifests(paths: string[], opts: LoadOptions = {}): LoadResult {
  const res: LoadResult = { objects: [], problems: [] };
  let files: string[];
  try {
    files = expandPaths(paths);
  } catch (e) {
    res.problems.push({ file: (e as { path?: string }).path ?? paths.join(','), object: '-', field: '', reason: (e as Error).message });
    return res;
  }
  for (const file of files) {
    const r = parseManifestText(readFileSync(file, 'utf8'), file, opts);
    res.objects.push(...r.objects);
    res.problems.push(...r.problems);
  }
  return res;
}

/**
 * Parsed documents by their text, for one file: a file edited in one document parses that
 * document again and hands back the very objects it produced before for the others.
 */
export type DocCache = Map<string, ParsedDoc[]>;
interface ParsedDoc {
  /** A YAML error, with its line counted from the start of its chunk. */
  error?: { line?: number; message: string };
  items: Validated[];
}

/**
 * Splits a stream at its document markers ("---" at the start of a line, which YAML does not
 * allow inside any scalar); each piece parses to the documents it held in the whole stream.
 * Directives ("%YAML") belong to the next document, so a stream with any is parsed whole.
 */
function splitDocuments(text: string): { text: string; line: number }[] {
  if (/^%/m.test(text)) return [{ text, line: 1 }];
  const out: { text: string; line: number }[] = [];
  let start = 0;
  let line = 1;
  let startLine = 1;
  let counted = 0;
  for (const m of text.matchAll(/^---(?=[ \t\r\n]|$)/gm)) {
    for (let i = text.indexOf('\n', counted); i !== -1 && i < m.index; i = text.indexOf('\n', i + 1)) line++;
    counted = m.index;
    if (m.index > start) out.push({ text: text.slice(start, m.index), line: startLine });
    start = m.index;
    startLine = line;
  }
  if (start < text.length || !out.length) out.push({ text: text.slice(start), line: startLine });
  return out;
}

function parseChunk(text: string, opts: LoadOptions): ParsedDoc[] {
  const docs = parseAllDocuments(text);
  return (Array.isArray(docs) ? docs : [docs]).map((doc) => {
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      return { error: { line: e.linePos?.[0]?.line, message: e.message.split('\n')[0]! }, items: [] };
    }
    let value: unknown;
    try {
      value = doc.toJS();
    } catch (e) {
      // e.g. "Excessive alias count": this document only, not the rest of the file.
      return { error: { message: (e as Error).message }, items: [] };
    }
    if (value === null || value === undefined) return { items: [] }; // empty document
    const items = isRecord(value) && value.kind === 'List' && Array.isArray(value.items) ? value.items : [value];
    return { items: items.map((item: unknown) => validateObject(item, opts)) };
  });
}

export function parseManifestText(text: string, file: string, opts: LoadOptions = {}, cache?: DocCache): LoadResult {
  const res: LoadResult = { objects: [], problems: [] };
  const previous = cache && new Map(cache);
  cache?.clear();
  let n = 0;
  for (const chunk of splitDocuments(text)) {
    let docs = previous?.get(chunk.text);
    if (!docs) docs = parseChunk(chunk.text, opts);
    cache?.set(chunk.text, docs);
    for (const doc of docs) {
      const where = `document ${++n}`;
      if (doc.error) {
        const line = doc.error.line && doc.error.line + chunk.line - 1;
        res.problems.push({ file: line ? `${file}:${line}` : file, object: where, field: '', reason: `invalid YAML: ${doc.error.message}` });
        continue;
      }
      doc.items.forEach((obj, j) => {
        const label = doc.items.length > 1 ? `${where} item ${j + 1}` : where;
        // An object without its name (just a kind) is still known only by its document: say which,
        // and let callers treat it as one that hides its identity (the dir source keeps last good).
        if ('problem' in obj) {
          const object = obj.object?.includes(' ') ? obj.object : obj.object ? `${label} (${obj.object})` : label;
          res.problems.push({ file, object, field: obj.field, reason: obj.problem });
        }
        else res.objects.push(Object.assign(obj.object, { __source: file }));
      });
    }
  }
  return res;
}

type Validated = { object: KObject } | { object?: string; field: string; problem: string };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Invalid extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(reason);
  }
}

function fail(field: string, reason: string): never {
  throw new Invalid(field, reason);
}

function stringMap(v: unknown, field: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) fail(field, 'must be a map of strings');
  for (const [k, val] of Object.entries(v)) if (typeof val !== 'string') fail(`${field}.${k}`, `must be a string, got ${JSON.stringify(val)}`);
  return v as Record<string, string>;
}

function port(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) fail(field, `must be an integer port 1-65535, got ${JSON.stringify(v)}`);
  return v;
}

function intOrName(v: unknown, field: string): number | string {
  if (typeof v === 'string') {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(v) || v.length > 15) fail(field, `must be a port number or an IANA port name, got "${v}"`);
    return v;
  }
  return port(v, field);
}

function stringList(v: unknown, field: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' && typeof s !== 'number')) fail(field, 'must be a list of strings');
  return (v as unknown[]).map(String);
}

export function validateObject(raw: unknown, opts: LoadOptions = {}): Validated {
  const defaultNamespace = opts.defaultNamespace ?? 'default';
  const runnable = opts.runnable ?? true;
  if (!isRecord(raw)) return { field: '', problem: 'not an object' };
  const kind = raw.kind;
  const meta = raw.metadata;
  if (typeof kind !== 'string' || !kind) return { field: 'kind', problem: 'required' };
  // A kind is one word (Kubernetes: CamelCase); anything else would also make a broken label.
  if (!/^[A-Za-z][A-Za-z0-9]*$/.test(kind)) return { field: 'kind', problem: `${JSON.stringify(kind)} is not a kind` };
  if (typeof raw.apiVersion !== 'string' || !raw.apiVersion) return { object: kind, field: 'apiVersion', problem: 'required' };
  if (!isRecord(meta) || typeof meta.name !== 'string' || !meta.name) return { object: kind, field: 'metadata.name', problem: 'required' };
  const ns = isNamespaced(kind) ? (typeof meta.namespace === 'string' && meta.namespace ? meta.namespace : defaultNamespace) : undefined;
  const label = ns ? `${kind} ${ns}/${meta.name}` : `${kind} ${meta.name}`;
  try {
    if (!DNS1123_SUBDOMAIN.test(meta.name) || meta.name.length > 253) fail('metadata.name', `"${meta.name}" is not a valid name (lowercase letters, digits, '-' and '.')`);
    if (ns !== undefined && !DNS1123_LABEL.test(ns)) fail('metadata.namespace', `"${ns}" is not a valid namespace name`);
    const labels = stringMap(meta.labels, 'metadata.labels');
    const annotations = stringMap(meta.annotations, 'metadata.annotations');
    const obj: KObject = {
      ...(raw as KObject),
      metadata: { ...(meta as unknown as KObject['metadata']), ...(ns ? { namespace: ns } : {}), labels, annotations },
    };
    if (ns === undefined) delete obj.metadata.namespace;
    if (!labels) delete obj.metadata.labels;
    if (!annotations) delete obj.metadata.annotations;
    switch (kind) {
      case 'Namespace':
        if (!DNS1123_LABEL.test(meta.name) || meta.name.length > 63) fail('metadata.name', `"${meta.name}" is not a valid namespace name`);
        break;
      case 'Pod':
        validatePodSpec(raw.spec, 'spec', runnable);
        if (!DNS1123_LABEL.test(meta.name.replace(/\./g, '-')) || meta.name.length > 63) fail('metadata.name', 'pod names must be at most 63 characters');
        break;
      case 'Deployment':
        validateDeployment(raw.spec, runnable);
        break;
      case 'Service':
        validateService(raw.spec, runnable);
        if (!DNS1123_LABEL.test(meta.name) || meta.name.length > 63) fail('metadata.name', `"${meta.name}" is not a valid service name (a DNS label)`);
        break;
      case 'ServiceAccount':
        break;
      default:
        // Kinds other parts of weft handle (AuthorizationPolicy, HTTPRoute, ...) are stored and passed on.
        break;
    }
    return { object: obj };
  } catch (e) {
    if (e instanceof Invalid) return { object: label, field: e.field, problem: e.message };
    throw e;
  }
}

function validatePodSpec(spec: unknown, at: string, runnable: boolean): void {
  if (!isRecord(spec)) fail(at, 'required');
  const cs = spec.containers;
  if (!Array.isArray(cs) || cs.length === 0) fail(`${at}.containers`, 'at least one container is required');
  const names = new Set<string>();
  cs.forEach((c: unknown, i: number) => validateContainer(c, `${at}.containers[${i}]`, names, runnable));
  if (spec.nodeName !== undefined && typeof spec.nodeName !== 'string') fail(`${at}.nodeName`, 'must be a string');
  if (spec.serviceAccountName !== undefined && (typeof spec.serviceAccountName !== 'string' || !DNS1123_SUBDOMAIN.test(spec.serviceAccountName)))
    fail(`${at}.serviceAccountName`, 'must be a valid name');
  if (spec.restartPolicy !== undefined && !['Always', 'OnFailure', 'Never'].includes(spec.restartPolicy as string))
    fail(`${at}.restartPolicy`, `must be Always, OnFailure or Never, got ${JSON.stringify(spec.restartPolicy)}`);
  if (spec.terminationGracePeriodSeconds !== undefined && (typeof spec.terminationGracePeriodSeconds !== 'number' || spec.terminationGracePeriodSeconds < 0))
    fail(`${at}.terminationGracePeriodSeconds`, 'must be a non-negative number');
  const volumes = validateVolumes(spec.volumes, `${at}.volumes`, runnable);
  (cs as Container[]).forEach((c, i) =>
    c.volumeMounts?.forEach((m, j) => {
      if (!volumes.has(m.name)) fail(`${at}.containers[${i}].volumeMounts[${j}].name`, `no volume named ${JSON.stringify(m.name)} in ${at}.volumes`);
    }),
  );
}

/** The volume sources the lab provides; on a cluster every source is the API server's business. */
function validateVolumes(v: unknown, at: string, runnable: boolean): Set<string> {
  const names = new Set<string>();
  if (v === undefined) return names;
  if (!Array.isArray(v)) fail(at, 'must be a list');
  v.forEach((vol: unknown, i: number) => {
    if (!isRecord(vol) || typeof vol.name !== 'string' || !DNS1123_LABEL.test(vol.name)) fail(`${at}[${i}].name`, 'required, a DNS label');
    if (names.has(vol.name)) fail(`${at}[${i}].name`, `duplicate volume name "${vol.name}"`);
    names.add(vol.name);
    if (!runnable) return;
    const sources = Object.keys(vol).filter((k) => k !== 'name');
    const known = ['emptyDir', 'configMap', 'projected'];
    if (sources.length !== 1 || !known.includes(sources[0]!)) fail(`${at}[${i}]`, `the lab provides exactly one of ${known.join(', ')} per volume, got ${sources.join(', ') || 'none'}`);
    if (isRecord(vol.configMap) && typeof vol.configMap.name !== 'string') fail(`${at}[${i}].configMap.name`, 'required');
    if (vol.projected !== undefined) {
      const ps = isRecord(vol.projected) ? vol.projected.sources : undefined;
      if (!Array.isArray(ps)) fail(`${at}[${i}].projected.sources`, 'must be a list');
      ps.forEach((src: unknown, j: number) => {
        const f = `${at}[${i}].projected.sources[${j}]`;
        if (!isRecord(src)) fail(f, 'must be an object');
        if (isRecord(src.serviceAccountToken)) {
          if (typeof src.serviceAccountToken.path !== 'string' || !src.serviceAccountToken.path || src.serviceAccountToken.path.includes('..')) fail(`${f}.serviceAccountToken.path`, 'required, a relative path');
        } else if (isRecord(src.configMap)) {
          if (typeof src.configMap.name !== 'string') fail(`${f}.configMap.name`, 'required');
        } else fail(f, 'the lab projects serviceAccountToken and configMap sources');
      });
    }
  });
  return names;
}

function validateContainer(c: unknown, at: string, names: Set<string>, runnable: boolean): void {
  if (!isRecord(c)) fail(at, 'must be an object');
  const ct = c as unknown as Container;
  if (typeof c.name !== 'string' || !DNS1123_LABEL.test(c.name)) fail(`${at}.name`, 'required, a DNS label');
  if (names.has(c.name)) fail(`${at}.name`, `duplicate container name "${c.name}"`);
  names.add(c.name);
  stringList(c.command, `${at}.command`);
  stringList(c.args, `${at}.args`);
  if (c.image !== undefined && typeof c.image !== 'string') fail(`${at}.image`, 'must be a string');
  if (c.workingDir !== undefined && (typeof c.workingDir !== 'string' || !c.workingDir.startsWith('/'))) fail(`${at}.workingDir`, 'must be an absolute path');
  if (runnable && !ct.command?.length && !builtinImageKnown(ct.image))
    fail(`${at}.command`, `required: the lab runs containers as local processes and "${ct.image ?? ''}" is not a built-in image (${BUILTIN_IMAGES.join(', ')})`);
  if (c.env !== undefined) {
    if (!Array.isArray(c.env)) fail(`${at}.env`, 'must be a list');
    c.env.forEach((e: unknown, i: number) => {
      if (!isRecord(e) || typeof e.name !== 'string' || !e.name) fail(`${at}.env[${i}].name`, 'required');
      if (e.value !== undefined && typeof e.value !== 'string') fail(`${at}.env[${i}].value`, `must be a string (quote numbers), got ${JSON.stringify(e.value)}`);
      if (runnable && e.valueFrom !== undefined) {
        const fp = isRecord(e.valueFrom) && isRecord(e.valueFrom.fieldRef) ? e.valueFrom.fieldRef.fieldPath : undefined;
        if (typeof fp !== 'string' || !FIELD_PATHS.has(fp)) fail(`${at}.env[${i}].valueFrom.fieldRef.fieldPath`, `supported: ${[...FIELD_PATHS].join(', ')}`);
      }
    });
  }
  if (c.volumeMounts !== undefined) {
    if (!Array.isArray(c.volumeMounts)) fail(`${at}.volumeMounts`, 'must be a list');
    c.volumeMounts.forEach((m: unknown, i: number) => {
      if (!isRecord(m) || typeof m.name !== 'string') fail(`${at}.volumeMounts[${i}].name`, 'required');
      if (typeof m.mountPath !== 'string' || !m.mountPath.startsWith('/') || m.mountPath.split('/').includes('..')) fail(`${at}.volumeMounts[${i}].mountPath`, 'required, an absolute path');
    });
  }
  if (c.ports !== undefined) {
    if (!Array.isArray(c.ports)) fail(`${at}.ports`, 'must be a list');
    c.ports.forEach((p: unknown, i: number) => {
      if (!isRecord(p)) fail(`${at}.ports[${i}]`, 'must be an object');
      port(p.containerPort, `${at}.ports[${i}].containerPort`);
      if (p.name !== undefined) intOrName(p.name, `${at}.ports[${i}].name`);
    });
  }
  if (runnable && c.readinessProbe !== undefined) {
    const p = c.readinessProbe;
    const pat = `${at}.readinessProbe`;
    if (!isRecord(p)) fail(pat, 'must be an object');
    if (isRecord(p.tcpSocket)) intOrName(p.tcpSocket.port, `${pat}.tcpSocket.port`);
    else if (isRecord(p.httpGet)) intOrName(p.httpGet.port, `${pat}.httpGet.port`);
    else if (isRecord(p.exec)) {
      if (!stringList(p.exec.command, `${pat}.exec.command`)?.length) fail(`${pat}.exec.command`, 'required');
    } else fail(pat, 'one of tcpSocket, httpGet or exec is required');
  }
}

export const FIELD_PATHS = new Set(['metadata.name', 'metadata.namespace', 'metadata.uid', 'spec.nodeName', 'spec.serviceAccountName', 'status.podIP', 'status.hostIP']);

function validateDeployment(spec: unknown, runnable: boolean): void {
  if (!isRecord(spec)) fail('spec', 'required');
  if (spec.replicas !== undefined && (typeof spec.replicas !== 'number' || !Number.isInteger(spec.replicas) || spec.replicas < 0))
    fail('spec.replicas', `must be a non-negative integer, got ${JSON.stringify(spec.replicas)}`);
  const sel = isRecord(spec.selector) ? stringMap(spec.selector.matchLabels, 'spec.selector.matchLabels') : undefined;
  if (!sel || Object.keys(sel).length === 0) fail('spec.selector.matchLabels', 'required');
  if (!isRecord(spec.template)) fail('spec.template', 'required');
  const tl = isRecord(spec.template.metadata) ? stringMap(spec.template.metadata.labels, 'spec.template.metadata.labels') : undefined;
  for (const [k, v] of Object.entries(sel)) if (tl?.[k] !== v) fail('spec.template.metadata.labels', `must match spec.selector.matchLabels (${k}=${v})`);
  validatePodSpec(spec.template.spec, 'spec.template.spec', runnable);
}

function validateService(spec: unknown, runnable: boolean): void {
  if (!isRecord(spec)) fail('spec', 'required');
  stringMap(spec.selector, 'spec.selector');
  if (runnable && spec.type !== undefined && spec.type !== 'ClusterIP') fail('spec.type', `only ClusterIP is supported in the lab, got ${JSON.stringify(spec.type)}`);
  if (spec.clusterIP !== undefined && spec.clusterIP !== 'None' && typeof spec.clusterIP !== 'string') fail('spec.clusterIP', 'must be a string');
  if (!Array.isArray(spec.ports) || spec.ports.length === 0) fail('spec.ports', 'at least one port is required');
  const names = new Set<string>();
  spec.ports.forEach((p: unknown, i: number) => {
    const at = `spec.ports[${i}]`;
    if (!isRecord(p)) fail(at, 'must be an object');
    port(p.port, `${at}.port`);
    if (p.targetPort !== undefined) intOrName(p.targetPort, `${at}.targetPort`);
    if (p.appProtocol !== undefined && (typeof p.appProtocol !== 'string' || p.appProtocol === '')) fail(`${at}.appProtocol`, 'must be a non-empty string');
    if (runnable && p.protocol !== undefined && p.protocol !== 'TCP') fail(`${at}.protocol`, `only TCP is supported, got ${JSON.stringify(p.protocol)}`);
    if ((spec.ports as unknown[]).length > 1 && typeof p.name !== 'string') fail(`${at}.name`, 'required when a service has more than one port');
    if (typeof p.name === 'string') {
      if (names.has(p.name)) fail(`${at}.name`, `duplicate port name "${p.name}"`);
      names.add(p.name);
    }
  });
}

/** `weft` is weft's own image (the binary: `weft waypoint run ...`), as waypoints are rendered. */
export const BUILTIN_IMAGES = ['weft/echo', 'weft/grpc-echo', 'weft/client', 'weft/sleep', 'weft'] as const;
export type BuiltinImage = (typeof BUILTIN_IMAGES)[number];

/** `weft/echo`, `weft/echo:1.0`, `docker.io/weft/echo:latest` all name the built-in echo image. */
export function builtinImage(image: string | undefined): BuiltinImage | undefined {
  if (!image) return undefined;
  const bare = image.replace(/^docker\.io\//, '').replace(/[:@].*$/, '');
  return (BUILTIN_IMAGES as readonly string[]).includes(bare) ? (bare as BuiltinImage) : undefined;
}

const builtinImageKnown = (image: string | undefined) => builtinImage(image) !== undefined;
