#!/usr/bin/env node
// weft's single entry point. It runs lib/cli/main.js, the bundle scripts/build-js.mjs makes from
// src/ (`make js`, part of `make build`), when that is at least as new as everything under src/:
// no TypeScript loader (its worker thread and esbuild) in agents and the control plane. Otherwise,
// with no bundle or with sources edited since it was built, the sources run through tsx's loader,
// so stale code never runs.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// Stack traces name src/ files and lines (from the bundle's source map, or tsx's inline ones).
process.setSourceMapsEnabled(true);

const root = fileURLToPath(new URL('..', import.meta.url));
const bundle = join(root, 'lib', 'cli', 'main.js');

/** True if dir, or anything under it, changed after `time` (ms). Directories count: a removed file. */
function changedSince(dir, time) {
  if (statSync(dir).mtimeMs > time) return true;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory() ? changedSince(p, time) : statSync(p).mtimeMs > time) return true;
  }
  return false;
}

function bundleIsCurrent() {
  let built;
  try {
    built = statSync(bundle).mtimeMs;
  } catch {
    return false; // not built
  }
  const src = join(root, 'src');
  try {
    return !changedSince(src, built);
  } catch (e) {
    if (e.code === 'ENOENT' && !existsSync(src)) return true; // an install with the bundle only
    if (e.code === 'ENOENT') return false; // a file vanished while we looked: sources are changing
    throw e;
  }
}

if (bundleIsCurrent()) {
  await import(pathToFileURL(bundle).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
