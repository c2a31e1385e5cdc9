// Chaining weft-cni into the node's CNI configuration: the runtime uses the first file (by name) of
// the configuration directory, so that is where weft's entry goes, last in its plugin list (it
// needs the pod's addresses from the network plugin before it). Idempotent: an entry already in
// place is not rewritten (runtimes reload on every change). Files are replaced atomically, through
// a temporary name the runtime does not read.
import { readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';

export const PLUGIN_TYPE = 'weft-cni';
/** The extensions libcni reads, in the order runtimes sort by file name. */
const CONF_EXT = /\.(conf|conflist|json)$/;

export interface ConfList {
  cniVersion?: string;
  name?: string;
  plugins: Record<string, unknown>[];
  [k: string]: unknown;
}

const isWeft = (p: Record<string, unknown>) => p.type === PLUGIN_TYPE;

/** A single-plugin .conf as a conflist (the same network, one plugin). */
export function asConfList(conf: Record<string, unknown>): ConfList {
  if (Array.isArray(conf.plugins)) return conf as ConfList;
  if (typeof conf.type !== 'string') throw new Error('neither a conflist (plugins) nor a plugin configuration (type)');
  const { cniVersion, name, ...plugin } = conf;
  return { cniVersion: cniVersion as string, name: name as string, plugins: [plugin] };
}

/** The conflist with weft's entry last (replacing any earlier weft entry). */
export function chain(list: ConfList, entry: Record<string, unknown>): ConfList {
  return { ...list, plugins: [...list.plugins.filter((p) => !isWeft(p)), { ...entry, type: PLUGIN_TYPE }] };
}

export function unchain(list: ConfList): ConfList {
  return { ...list, plugins: list.plugins.filter((p) => !isWeft(p)) };
}

export const isChained = (list: ConfList, entry: Record<string, unknown>) => isDeepStrictEqual(list.plugins.at(-1), { ...entry, type: PLUGIN_TYPE }) && list.plugins.filter(isWeft).length === 1;

export function confFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => (e.isFile() || e.isSymbolicLink()) && CONF_EXT.test(e.name))
    .map((e) => e.name)
    .sort();
}

function readConf(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`, { cause: e });
  }
}

function writeAtomic(path: string, value: unknown, modeFrom?: string): void {
  const tmp = join(path, '..', `.${basename(path)}.weft-tmp`);
  let mode = 0o644;
  try {
    if (modeFrom) mode = statSync(modeFrom).mode & 0o777;
  } catch {}
  writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n', { mode });
  renameSync(tmp, path);
}

export type ChainOutcome = { file: string; changed: boolean } | { file: undefined; changed: false };

/**
 * Chains weft into the primary configuration of `dir`; undefined file if there is none yet (the
 * network plugin has not written it: try again later). A single-plugin .conf becomes a .conflist.
 * weft entries in other files (a former primary) are taken out.
 */
export function installInto(dir: string, entry: Record<string, unknown>): ChainOutcome {
  const files = confFiles(dir);
  const primary = files[0];
  if (!primary) return { file: undefined, changed: false };
  let changed = false;
  for (const f of files.slice(1)) changed = removeFrom(join(dir, f)) || changed;
  const path = join(dir, primary);
  const conf = readConf(path);
  const list = asConfList(conf);
  const isList = Array.isArray(conf.plugins);
  const target = isList ? path : path.replace(CONF_EXT, '.conflist');
  if (isList && isChained(list, entry)) return { file: target, changed };
  writeAtomic(target, chain(list, entry), path);
  if (target !== path) rmSync(path, { force: true });
  return { file: target, changed: true };
}

/** Takes weft out of one file; true if it was there. */
function removeFrom(path: string): boolean {
  let conf;
  try {
    conf = readConf(path);
  } catch {
    return false; // not ours to judge
  }
  if (!Array.isArray(conf.plugins) || !(conf.plugins as Record<string, unknown>[]).some(isWeft)) return false;
  writeAtomic(path, unchain(conf as ConfList), path);
  return true;
}

/** Takes weft out of every configuration in `dir`; the files it changed. */
export function removeFromDir(dir: string): string[] {
  let files: string[];
  try {
    files = confFiles(dir);
  } catch {
    return [];
  }
  return files.filter((f) => removeFrom(join(dir, f)));
}
