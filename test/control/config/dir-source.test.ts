// DirSource after the shared store was extracted: last good versions by object and by file,
// deletes, and new subdirectories.
import { mkdirSync, mkdtempSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DirSource } from '../../../src/control/config/dir-source.ts';
import { until } from '../../util/until.ts';

const dir = mkdtempSync(join(tmpdir(), 'weft-dir-source-'));
const source = new DirSource(dir, { quietMs: 20, maxDelayMs: 1000 });
afterAll(() => {
  source.close();
  rmSync(dir, { recursive: true, force: true });
});

const service = (name: string, port: number) =>
  `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: default}\nspec: {selector: {app: ${name}}, ports: [{port: ${port}}]}\n`;
const portOf = (name: string) => (source.snapshot.objects.find((o) => o.metadata.name === name)?.spec as { ports: { port: number }[] } | undefined)?.ports[0]?.port;


describe('DirSource', () => {
  it('keeps last good versions through bad edits and broken files, and follows deletes and new directories', async () => {
    writeFileSync(join(dir, 'web.yaml'), service('web', 80));
    writeFileSync(join(dir, 'api.yaml'), service('api', 81));
    expect(source.start().objects).toHaveLength(2);

    writeFileSync(join(dir, 'web.yaml'), service('web', 70000));
    await until('invalid port reported', () => source.snapshot.problems.some((p) => p.field === 'spec.ports[0].port'));
    expect(source.snapshot.problems[0]).toMatchObject({ file: join(dir, 'web.yaml'), object: 'Service default/web' });
    expect(portOf('web')).toBe(80);

    writeFileSync(join(dir, 'api.yaml'), 'kind: [unclosed\n');
    await until('broken file reported', () => source.snapshot.problems.some((p) => p.object === 'document 1'));
    expect(portOf('api')).toBe(81);

    writeFileSync(join(dir, 'web.yaml'), service('web', 8080));
    unlinkSync(join(dir, 'api.yaml'));
    await until('fixed and deleted', () => portOf('web') === 8080 && portOf('api') === undefined);
    expect(source.snapshot.problems).toEqual([]);

    mkdirSync(join(dir, 'more'));
    await new Promise((r) => setTimeout(r, 100)); // the reload after mkdir watches the new directory
    writeFileSync(join(dir, 'more', 'db.yaml'), service('db', 5432));
    await until('file in a new directory', () => portOf('db') === 5432);
  });
});

describe('DirSource reloads', () => {
  it('reads only what changed: other objects and namespaces stay the same objects, and a key two files hold survives one of them', () => {
    const d = mkdtempSync(join(tmpdir(), 'weft-dir-source-'));
    const src = new DirSource(d, { quietMs: 1000, maxDelayMs: 1000 });
    try {
      const svc = (ns: string, name: string, port: number) => `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec: {selector: {app: ${name}}, ports: [{port: ${port}}]}\n`;
      writeFileSync(join(d, 'a.yaml'), [svc('a', 'one', 80), svc('a', 'two', 81)].join('---\n'));
      writeFileSync(join(d, 'b.yaml'), svc('b', 'three', 82));
      const first = src.start();
      const find = (s: typeof first, ns: string, name: string) => s.namespaces.get(ns)?.kinds.get('Service')?.find((o) => o.metadata.name === name);

      writeFileSync(join(d, 'a.yaml'), [svc('a', 'one', 80), svc('a', 'two', 9081)].join('---\n'));
      src.reload();
      const second = src.snapshot;
      expect(find(second, 'a', 'one')).toBe(find(first, 'a', 'one'));
      expect(find(second, 'a', 'two')).not.toBe(find(first, 'a', 'two'));
      expect(second.namespaces.get('b')).toBe(first.namespaces.get('b'));

      // The same Service in a second file: deleting one file leaves the other's version.
      writeFileSync(join(d, 'c.yaml'), svc('b', 'three', 83));
      src.reload();
      unlinkSync(join(d, 'c.yaml'));
      src.reload();
      expect((find(src.snapshot, 'b', 'three')?.spec as { ports: { port: number }[] }).ports[0]!.port).toBe(82);
      unlinkSync(join(d, 'b.yaml'));
      src.reload();
      expect(find(src.snapshot, 'b', 'three')).toBeUndefined();
      expect(src.snapshot.namespaces.has('b')).toBe(false);
    } finally {
      src.close();
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('DirSource: an edit that loses the name', () => {
  // Found by test/fuzz/config.test.ts: a document without metadata.name (or apiVersion) was
  // reported as object "Service", not as a document, so the file's last good objects were released:
  // a bad edit took the Service away. It is now "document N (Service)" and keeps them.
  it('keeps the last good object and reports the document by number', () => {
    const d = mkdtempSync(join(tmpdir(), 'weft-dir-source-'));
    const src = new DirSource(d, { quietMs: 600_000, maxDelayMs: 600_000 });
    try {
      const ok = 'apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{port: 80}]}\n';
      writeFileSync(join(d, 'a.yaml'), `${ok}---\n${ok.replace('web', 'api')}`);
      expect(src.start().objects.map((o) => o.metadata.name).sort()).toEqual(['api', 'web']);
      writeFileSync(join(d, 'a.yaml'), `${ok.replace('name: web, ', '')}---\n${ok.replace('web', 'api').replace('apiVersion: v1\n', '')}`);
      src.reload();
      expect(src.snapshot.objects.map((o) => o.metadata.name).sort()).toEqual(['api', 'web']);
      expect(src.snapshot.problems).toEqual([
        { file: join(d, 'a.yaml'), object: 'document 1 (Service)', field: 'metadata.name', reason: 'required' },
        { file: join(d, 'a.yaml'), object: 'document 2 (Service)', field: 'apiVersion', reason: 'required' },
      ]);
    } finally {
      src.close();
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('DirSource: a rewrite within one clock tick', () => {
  // Found by test/fuzz/config.test.ts: file times come from the kernel's coarse clock, so a file
  // rewritten to the same size within a few milliseconds kept its mtime and size, and the change
  // was never read (until some later write). Files read while their mtime was recent are read
  // again on the next reload, as git does for "racily clean" entries.
  it('reads a same-size rewrite that left mtime unchanged', () => {
    const d = mkdtempSync(join(tmpdir(), 'weft-dir-source-'));
    const src = new DirSource(d, { quietMs: 600_000, maxDelayMs: 600_000 });
    try {
      const f = join(d, 'a.yaml');
      const svc = (port: number) => `apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {ports: [{port: ${port}}]}\n`;
      // A whole-second mtime, so setting it again below restores it exactly (utimes takes no ns).
      const t = new Date(Math.floor(Date.now() / 1000) * 1000);
      writeFileSync(f, svc(8080));
      utimesSync(f, t, t);
      const port = () => (src.snapshot.objects[0]?.spec as { ports: { port: number }[] }).ports[0]!.port;
      src.start();
      expect(port()).toBe(8080);
      writeFileSync(f, svc(8081));
      utimesSync(f, t, t); // what a write in the same tick looks like
      expect(statSync(f).size).toBe(svc(8080).length);
      src.reload();
      expect(port()).toBe(8081);
    } finally {
      src.close();
      rmSync(d, { recursive: true, force: true });
    }
  });
});
