// Where weft's files are. Sources run from src/ (through tsx) or bundled into lib/cli/main.js, so a
// path relative to a module's own URL means different things in the two; everything that needs a
// file of the repository (or of the image, or of the CNI plugin's runtime copy) starts from here.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The nearest directory at or above `from` whose package.json names the package `name`. */
export function findPackageRoot(from: string, name = 'weft'): string {
  for (let dir = from; ; ) {
    try {
      if ((JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown }).name === name) return dir;
    } catch {}
    const up = dirname(dir);
    if (up === dir) throw new Error(`weft: no package.json of "${name}" in ${from} or above it`);
    dir = up;
  }
}

/** The repository (or image) root: the directory holding weft's package.json. */
export const repoRoot = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

/** Paths inside the repository. */
export const rootPath = (...parts: string[]) => join(repoRoot, ...parts);

/**
 * Where node-gyp put the native addons: build/Release, or with WEFT_NATIVE_BUILD=Debug the build of
 * `make native-debug` (libstdc++ assertions on, so container misuse aborts in tests).
 */
export const nativeBuildDir = rootPath('build', process.env.WEFT_NATIVE_BUILD === 'Debug' ? 'Debug' : 'Release');

/** bin/weft.js, the entry point child processes (agents, the lab daemon) are started with. */
export const weftBin = rootPath('bin', 'weft.js');
