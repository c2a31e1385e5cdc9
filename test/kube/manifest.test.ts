import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { builtinImage, formatProblem, loadManifests, parseManifestText, type DocCache } from '../../src/kube/manifest.ts';

const pod = (name: string, extra = '') => `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: demo}
spec:
  containers:
  - name: c
    image: weft/echo${extra}
`;

describe('manifests', () => {
  it('keeps valid objects and names file, object and field of invalid ones', () => {
    const text = [
      pod('good'),
      `apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  ports: [{port: 99999}]\n`,
      `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: -1\n  selector: {matchLabels: {a: b}}\n  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: weft/echo}]}}\n`,
      pod('other'),
    ].join('---\n');
    const r = parseManifestText(text, 'app.yaml');
    expect(r.objects.map((o) => o.metadata.name)).toEqual(['good', 'other']);
    expect(r.problems.map(formatProblem)).toEqual([
      'app.yaml: Service demo/web: spec.ports[0].port: must be an integer port 1-65535, got 99999',
      'app.yaml: Deployment default/d: spec.replicas: must be a non-negative integer, got -1',
    ]);
  });

  it('requires a command for images that are not built in, naming the container', () => {
    const r = parseManifestText(pod('p').replace('weft/echo', 'nginx:1.25'), 'f.yaml');
    expect(r.problems[0]).toMatchObject({ object: 'Pod demo/p', field: 'spec.containers[0].command' });
  });

  it('checks that a deployment selector matches its template', () => {
    const r = parseManifestText(
      `apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {app: x}}\n  template: {metadata: {labels: {app: y}}, spec: {containers: [{name: c, image: weft/echo}]}}\n`,
      'd.yaml',
    );
    expect(r.problems[0]).toMatchObject({ field: 'spec.template.metadata.labels' });
  });

  it('reports broken YAML with its line and still reads other documents', () => {
    const r = parseManifestText(`${pod('a')}---\nkind: Pod\n  bad: [indent\n---\n${pod('b')}`, 'x.yaml');
    expect(r.objects.map((o) => o.metadata.name)).toEqual(['a', 'b']);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]!.file).toMatch(/^x\.yaml:\d+$/);
    expect(r.problems[0]!.reason).toMatch(/invalid YAML/);
  });

  it('parses a stream document by document as the whole stream parses, reusing unchanged documents', () => {
    const streams = [
      `${pod('a')}---\n${pod('b')}`,
      `---\n${pod('a')}`,
      `# leading comment\n---\n${pod('a')}---\n`,
      `${pod('a')}...\n---\n${pod('b')}`,
      `a: |\n  x\n---\n${pod('b')}`,
      `%YAML 1.2\n---\n${pod('a')}`,
      `${pod('a')}--- \n${pod('b')}---\nkind: Pod\n  bad: [indent\n`,
      `---\n---\n`,
      '',
      `--- {apiVersion: v1, kind: Namespace, metadata: {name: n}}\n`,
    ];
    // The reference: the stream parsed whole, as one YAML stream.
    const whole = (text: string) => {
      const docs = parseAllDocuments(text);
      return (Array.isArray(docs) ? docs : []).map((d, i) => (d.errors.length ? `document ${i + 1}: error at line ${d.errors[0]!.linePos?.[0]?.line}` : JSON.stringify(d.toJS())));
    };
    for (const text of streams) {
      const got = parseManifestText(text, 'f.yaml', { runnable: false }, new Map());
      const ref = whole(text);
      const objects = ref.filter((d) => d.startsWith('{"apiVersion"'));
      expect(got.objects.map((o) => o.metadata.name), text).toEqual(objects.map((d) => JSON.parse(d).metadata.name));
      const yamlErrors = got.problems.filter((p) => /invalid YAML/.test(p.reason)).map((p) => `${p.object}: error at line ${p.file.split(':')[1]}`);
      expect(yamlErrors, text).toEqual(ref.filter((d) => d.includes('error at line')));
      // Other documents are not objects: counted, so the numbering after them agrees.
      const others = got.problems.filter((p) => !/invalid YAML/.test(p.reason)).map((p) => p.object);
      expect(others, text).toEqual(ref.flatMap((d, i) => (d.startsWith('{"a"') ? [`document ${i + 1}`] : [])));
    }

    const cache: DocCache = new Map();
    const before = parseManifestText(`${pod('a')}---\n${pod('b')}---\n${pod('c')}`, 'f.yaml', {}, cache);
    const after = parseManifestText(`${pod('a')}---\n${pod('b', ':2')}---\n${pod('c')}`, 'f.yaml', {}, cache);
    expect(after.objects[0]).toBe(before.objects[0]);
    expect(after.objects[2]).toBe(before.objects[2]);
    expect(after.objects[1]).not.toBe(before.objects[1]);
    expect(cache.size).toBe(3); // only the documents of the current text are kept
  });

  it('reads Lists, stores kinds it does not run, and reads directories in order', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-manifest-'));
    writeFileSync(join(dir, '2.yaml'), `apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ServiceAccount, metadata: {name: sa}}\n- {apiVersion: security.istio.io/v1, kind: AuthorizationPolicy, metadata: {name: p}, spec: {action: DENY}}\n`);
    writeFileSync(join(dir, '1.yml'), pod('first'));
    writeFileSync(join(dir, 'notes.txt'), 'ignored');
    const r = loadManifests([dir]);
    rmSync(dir, { recursive: true, force: true });
    expect(r.problems).toEqual([]);
    expect(r.objects.map((o) => `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`)).toEqual([
      'Pod/demo/first',
      'ServiceAccount/default/sa',
      'AuthorizationPolicy/default/p',
    ]);
  });

  it('names a missing file', () => {
    const r = loadManifests(['/nonexistent/weft.yaml']);
    expect(formatProblem(r.problems[0]!)).toMatch(/\/nonexistent\/weft\.yaml.*ENOENT/);
  });

  it('recognises built-in images with tags and registries', () => {
    expect(builtinImage('weft/echo:1.2')).toBe('weft/echo');
    expect(builtinImage('docker.io/weft/client')).toBe('weft/client');
    expect(builtinImage('nginx')).toBeUndefined();
  });
});

describe('manifests: one bad document stays one', () => {
  // Found by test/fuzz/config.test.ts: the yaml library throws from toJS() on an alias bomb
  // ("Excessive alias count"); that escaped the per-document handling, so the whole file failed and
  // the valid objects next to it were not read.
  it('reports an alias bomb as its document and still reads the others', () => {
    const bomb = 'a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\nkind: Service';
    const ok = 'apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{port: 80}]}\n';
    const r = parseManifestText(`${ok}---\n${bomb}\n---\n${ok.replace('web', 'api')}`, 'f.yaml');
    expect(r.objects.map((o) => o.metadata.name)).toEqual(['web', 'api']);
    expect(r.problems).toEqual([{ file: 'f.yaml', object: 'document 2', field: '', reason: expect.stringMatching(/invalid YAML: Excessive alias count/) }]);
  });

  it('names a nameless object by its document and kind', () => {
    const r = parseManifestText('apiVersion: v1\nkind: Pod\nmetadata: {}\n---\nkind: Service\n', 'f.yaml');
    expect(r.problems.map((p) => p.object)).toEqual(['document 1 (Pod)', 'document 2 (Service)']);
  });

  // Found by test/fuzz/config.test.ts: a kind of " " made the object's label " ", which named
  // neither the document nor the object.
  it('refuses a kind that is not one word, naming the document', () => {
    const r = parseManifestText('apiVersion: v1\nkind: " "\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod x\nmetadata: {name: b}\n', 'f.yaml');
    expect(r.problems.map((p) => [p.object, p.field])).toEqual([['document 1', 'kind'], ['document 2', 'kind']]);
  });
});

describe('manifests: pod volumes', () => {
  const podWith = (spec: string) => parseManifestText(`apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n${spec}`, 'pod.yaml');
  it('takes emptyDir, configMap and projected token volumes, and names what is wrong otherwise', () => {
    const ok = podWith(`  volumes: [{name: t, projected: {sources: [{serviceAccountToken: {audience: istio-ca, path: token}}]}}, {name: c, configMap: {name: x}}, {name: e, emptyDir: {}}]
  containers: [{name: c, image: weft/sleep, volumeMounts: [{name: t, mountPath: /var/run/secrets/tokens}]}]`);
    expect(ok.problems).toEqual([]);
    const unknownMount = podWith(`  containers: [{name: c, image: weft/sleep, volumeMounts: [{name: t, mountPath: /x}]}]`);
    expect(unknownMount.problems.map(formatProblem).join()).toContain('spec.containers[0].volumeMounts[0].name: no volume named "t"');
    const hostPath = podWith(`  volumes: [{name: h, hostPath: {path: /etc}}]
  containers: [{name: c, image: weft/sleep}]`);
    expect(hostPath.problems.map(formatProblem).join()).toContain('spec.volumes[0]: the lab provides exactly one of emptyDir, configMap, projected per volume, got hostPath');
    const relative = podWith(`  volumes: [{name: e, emptyDir: {}}]
  containers: [{name: c, image: weft/sleep, volumeMounts: [{name: e, mountPath: tmp}]}]`);
    expect(relative.problems.map(formatProblem).join()).toContain('volumeMounts[0].mountPath: required, an absolute path');
  });
});
