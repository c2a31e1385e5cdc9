// YAML documents and Kubernetes/Istio objects (Service, Pod, Deployment, Namespace,
// AuthorizationPolicy, PeerAuthentication, ...) through the watched-directory source and the mesh
// model builder, as the control plane reads them. Each run writes one file: a valid anchor object
// first and last, fuzzed documents between them (mutated objects, mutated YAML text, aliases, deep
// nesting, prototype keys). Properties: nothing throws; every problem names the file, the object
// (or document) and a reason; both anchors survive whatever sits between them; the model builds,
// and Object.prototype is untouched.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { DirSource } from '../../src/control/config/dir-source.ts';
import { MeshModelBuilder } from '../../src/control/model/mesh-model.ts';
import { DEFAULT_MESH } from '../../src/control/model/networking/workloads.ts';
import { fuzz, testTimeout } from './fuzz.ts';

const dir = mkdtempSync(join(tmpdir(), 'weft-fuzz-config-'));
const file = join(dir, 'fuzz.yaml');
// Reloaded by hand after each write; the watcher's debounce is long enough never to interleave.
const source = new DirSource(dir, { quietMs: 600_000, maxDelayMs: 600_000 });
afterAll(() => {
  source.close();
  rmSync(dir, { recursive: true, force: true });
});

const anchor = (name: string, port: number) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'anchors' },
  spec: { selector: { app: name }, ports: [{ port }] },
});

const TEMPLATES: Record<string, unknown>[] = [
  { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
  { apiVersion: 'v1', kind: 'Service', metadata: { name: 'cart', namespace: 'shop' }, spec: { selector: { app: 'cart' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
  {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'cart-0', namespace: 'shop', labels: { app: 'cart' } },
    spec: { nodeName: 'node-0', serviceAccountName: 'cart', containers: [{ name: 'app', image: 'weft/echo', ports: [{ containerPort: 8080 }] }] },
    status: { podIP: '10.244.0.5', phase: 'Running' },
  },
  {
    apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web', namespace: 'shop' },
    spec: { replicas: 2, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'app', image: 'weft/echo' }] } } },
  },
  { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'cart', namespace: 'shop' } },
  {
    apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'allow-web', namespace: 'shop' },
    spec: {
      selector: { matchLabels: { app: 'cart' } }, action: 'ALLOW',
      rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/web'], ipBlocks: ['10.0.0.0/8'] } }], to: [{ operation: { ports: ['8080'] } }], when: [{ key: 'source.namespace', values: ['shop'] }] }],
    },
  },
  { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'strict', namespace: 'shop' }, spec: { mtls: { mode: 'STRICT' }, portLevelMtls: { '8080': { mode: 'PERMISSIVE' } } } },
  { apiVersion: 'networking.istio.io/v1', kind: 'ServiceEntry', metadata: { name: 'ext', namespace: 'shop' }, spec: { hosts: ['example.com'], ports: [{ number: 443, name: 'tls', protocol: 'TLS' }], resolution: 'DNS' } },
  { apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'cart', namespace: 'shop' }, spec: { host: 'cart', subsets: [{ name: 'v1', labels: { version: 'v1' } }] } },
];

const leaf = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom('', '*', '0', '-1', '65536', '10.0.0.0/33', '::/0', 'cluster.local/ns/*/sa/*', 'DENY', 'AUDIT', 'CUSTOM', 'DISABLE', 'UNSET', 'ambient', 'none', '__proto__', 'constructor'),
  fc.integer({ min: 1000, max: 100_000 }).map((n) => 'x'.repeat(n)),
);
const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  v: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, fc.array(tie('v'), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 6 }), tie('v'), { maxKeys: 3 })),
})).v;

/** A path into an object: keys that exist (so mutations land somewhere meaningful) or new ones. */
type Edit = { path: number[]; newKey: string; op: 'set' | 'delete' | 'add'; value: unknown };
const edit: fc.Arbitrary<Edit> = fc.record({
  path: fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
  newKey: fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'spec', 'metadata', 'kind', 'namespace', 'name', 'rules', 'ports'), fc.string({ maxLength: 8 })),
  op: fc.constantFrom('set', 'set', 'delete', 'add'),
  value,
});

function applyEdit(root: Record<string, unknown>, e: Edit): void {
  let cur: unknown = root;
  for (let i = 0; i < e.path.length; i++) {
    if (!cur || typeof cur !== 'object') return;
    const keys = Object.keys(cur);
    if (!keys.length) return;
    const k = keys[e.path[i]! % keys.length]!;
    const last = i === e.path.length - 1;
    const c = cur as Record<string, unknown>;
    if (last) {
      if (e.op === 'delete') delete c[k];
      else if (e.op === 'add') Object.defineProperty(c, e.newKey, { value: e.value, enumerable: true, writable: true, configurable: true });
      else c[k] = e.value;
      return;
    }
    cur = c[k];
  }
}

type Doc =
  | { kind: 'object'; template: number; edits: Edit[]; as: 'yaml' | 'json' }
  | { kind: 'text-mutated'; template: number; at: number; insert: string }
  | { kind: 'special'; which: number }
  | { kind: 'raw'; text: string };

const SPECIALS = [
  'kind: [unclosed',
  'a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\nkind: Service',
  `apiVersion: v1\nkind: Service\nmetadata: {name: deep, namespace: shop}\nspec: ${'['.repeat(5000)}${']'.repeat(5000)}`,
  `apiVersion: v1\nkind: Service\nmetadata: {name: deep2, namespace: shop}\nspec:\n${Array.from({ length: 300 }, (_, i) => `${' '.repeat(i + 1)}k${i}:`).join('\n')} 1`,
  'apiVersion: v1\nkind: Service\nmetadata:\n  name: proto\n  namespace: shop\n  labels:\n    __proto__: {polluted: yes}\nspec: {ports: [{port: 80}]}',
  'apiVersion: v1\nkind: Service\nmetadata: !!binary aGVsbG8=\n',
  'apiVersion: v1\nkind: Service\nmetadata: {name: dup, name: dup2, namespace: shop}\nspec: {ports: [{port: 80}]}',
  '? [complex, key]\n: value\nkind: Pod',
  '--- !tag\nkind: Pod',
  'apiVersion: v1\nkind: Service\nmetadata: {name: "a\\u0000b", namespace: shop}\nspec: {ports: [{port: 80}]}',
  '%YAML 9.9\n---\nkind: Pod',
  '\t\tkind: Pod',
  'metadata: {name: x}\nkind: 7',
  '[]',
  '"just a string"',
  'null',
  '~',
  '- apiVersion: v1\n  kind: Service',
  '|\n  literal',
];

const doc: fc.Arbitrary<Doc> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant<'object'>('object'), template: fc.nat(TEMPLATES.length - 1), edits: fc.array(edit, { maxLength: 3 }), as: fc.constantFrom<'yaml' | 'json'>('yaml', 'yaml', 'json') }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant<'text-mutated'>('text-mutated'), template: fc.nat(TEMPLATES.length - 1), at: fc.nat(), insert: fc.oneof(fc.string({ maxLength: 3 }), fc.constantFrom(':', '-', '\n', '  ', '{', '[', '&a', '*a', '!!', '#', '"', "'", '|', '>', '---', '...')) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant<'special'>('special'), which: fc.nat(SPECIALS.length - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant<'raw'>('raw'), text: fc.string({ maxLength: 80 }) }) },
);

function render(d: Doc): string {
  switch (d.kind) {
    case 'object': {
      const o = structuredClone(TEMPLATES[d.template]!);
      for (const e of d.edits) applyEdit(o, e);
      return d.as === 'json' ? JSON.stringify(o) : YAML.stringify(o, { aliasDuplicateObjects: false });
    }
    case 'text-mutated': {
      const t = YAML.stringify(TEMPLATES[d.template]!);
      const at = d.at % (t.length + 1);
      return t.slice(0, at) + d.insert + t.slice(at);
    }
    case 'special':
      return SPECIALS[d.which]!;
    case 'raw':
      return d.text;
  }
}

const builder = new MeshModelBuilder(DEFAULT_MESH);
let run = 0;

function property(docs: Doc[]): string {
  run++;
  // Ports differ per run so a stale snapshot cannot pass for a fresh one.
  const [first, last] = [anchor('anchor-first', 1 + (run % 60000)), anchor('anchor-last', 2 + (run % 60000))];
  const text = [YAML.stringify(first), ...docs.map(render), YAML.stringify(last)].join('\n---\n');
  writeFileSync(file, text);
  source.reload();
  const snap = source.snapshot;
  for (const p of snap.problems) {
    expect(p.file.startsWith(file) && /^(:\d+)?$/.test(p.file.slice(file.length)), JSON.stringify(p)).toBe(true);
    // "document N", "document N (Kind)", or "Kind ns/name" (which may quote a bad name verbatim).
    expect(p.object, JSON.stringify(p)).toMatch(/^(document \d+( \(\S+\))?|\S+ .+)$/s);
    expect(p.reason, JSON.stringify(p)).not.toBe('');
  }
  const port = (name: string) => (snap.objects.find((o) => o.metadata.namespace === 'anchors' && o.metadata.name === name)?.spec as { ports?: { port: number }[] })?.ports?.[0]?.port;
  expect(port('anchor-first'), 'the valid object before the fuzzed documents').toBe(first.spec.ports[0]!.port);
  // A directive (%YAML) makes the loader parse the stream whole, as YAML scopes directives to the
  // next document; then an unterminated quote can run to the end of the file (the yaml library
  // does not stop it at a "---" line) and the objects after it keep their last good version.
  if (!/^%/m.test(text)) expect(port('anchor-last'), 'the valid object after the fuzzed documents').toBe(last.spec.ports[0]!.port);
  const model = builder.build(snap);
  for (const p of model.problems) {
    expect(p.kind && p.reason, JSON.stringify(p)).toBeTruthy();
    expect(typeof p.field).toBe('string');
  }
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(model.services.some((s) => s.name === 'anchor-first')).toBe(true);
  // Coarse outcome classes (which top-level fields were refused), so the corpus keeps few inputs.
  const cls = (p: { field: string; object: string }) => {
    const f = p.field.replace(/\[\d+\]/g, '').split('.').slice(0, 2).join('.');
    return !p.field ? p.object.split(' ')[0]! : /^[a-zA-Z.]+$/.test(f) ? f : 'other';
  };
  return `${snap.problems.length ? `problems:${[...new Set(snap.problems.map(cls))].sort().slice(0, 3).join('|')}` : 'clean'}${model.problems.length ? '+model' : ''}`;
}

describe('fuzz: config loading', () => {
  it(
    'reports bad documents by file, object and field, and keeps the valid ones around them',
    async () => {
      source.start();
      const { runs } = await fuzz('config', fc.array(doc, { minLength: 1, maxLength: 5 }), property);
      expect(runs).toBeGreaterThan(0);
    },
    testTimeout('config'),
  );
});
