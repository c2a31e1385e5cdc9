import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { findPackageRoot, repoRoot, rootPath, weftBin } from '../../src/util/paths.ts';

describe('paths', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'weft-paths-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('finds the repository from src/', () => {
    expect(repoRoot).toBe(join(import.meta.dirname, '..', '..'));
    expect(rootPath('proto', 'istio', 'ca', 'ca.proto')).toBe(join(repoRoot, 'proto/istio/ca/ca.proto'));
    expect(weftBin).toBe(join(repoRoot, 'bin/weft.js'));
  });

  it("walks up past other packages' package.json (node_modules, nested dirs) to weft's", () => {
    writeFileSync(join(tmp, 'package.json'), JSON.stringify({ name: 'weft' }));
    const deep = join(tmp, 'node_modules', 'dep', 'lib', 'cli');
    mkdirSync(deep, { recursive: true });
    writeFileSync(join(tmp, 'node_modules', 'dep', 'package.json'), JSON.stringify({ name: 'dep' }));
    writeFileSync(join(tmp, 'node_modules', 'dep', 'lib', 'package.json'), '{ not json');
    expect(findPackageRoot(deep)).toBe(tmp);
    expect(findPackageRoot(deep, 'dep')).toBe(join(tmp, 'node_modules', 'dep'));
  });

  it('says so when there is no such package', () => {
    expect(() => findPackageRoot(tmp, 'no-such-package')).toThrow(/no package.json of "no-such-package"/);
  });
});
