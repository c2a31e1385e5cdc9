// `weft cni-install`, the CNI installer next to each node agent. It puts the plugin on the node
// (a runtime directory with node, the C libraries it links against and the plugin's modules, so the
// node needs neither Node.js nor matching libraries, plus a wrapper in the CNI bin directory),
// writes the kubeconfig the plugin reads labels with, chains the plugin into the primary CNI
// configuration, keeps all of that in place (network plugins rewrite their files; tokens rotate).
// When it is stopped it takes the plugin out of the chain only if weft is being uninstalled (its
// DaemonSet is gone or being deleted, as istio-cni decides): across an agent restart or rollout
// the plugin stays, so a pod that should be captured waits (its CNI ADD fails, and the kubelet
// retries) instead of starting outside the mesh.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { kubeGet, type KubeAccess } from '../kube/client.ts';
import { repoRoot } from '../util/paths.ts';
import { installInto, PLUGIN_TYPE, removeFromDir } from './conflist.ts';

export interface CniInstallOptions {
  /** Paths as this container sees them. */
  cniBinDir: string;
  cniConfDir: string;
  installDir: string;
  /** installDir as the host (and so the plugin) sees it. */
  hostInstallDir: string;
  /** The agent's enrollment socket, a host path. */
  agentSocket: string;
  excludeNamespaces: string[];
  /** Service account token, CA and namespace for the API (the plugin gets copies). */
  serviceAccountDir: string;
  /** API server URL; default from KUBERNETES_SERVICE_HOST/PORT. */
  kubeServer?: string;
  cgroupRoot?: string;
  /** The DaemonSet this installer runs in (in the service account's namespace); default weft-agent. */
  daemonSet?: string;
}

/** Packages the plugin loads at run time (with their dependencies). */
const RUNTIME_PACKAGES = ['tsx', 'yaml'];
const ENTRY = 'cni-entry.mjs';

function packageClosure(root: string, names: string[]): string[] {
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    const dir = join(root, 'node_modules', name);
    if (!existsSync(join(dir, 'package.json'))) return; // an optional dependency for another platform
    seen.add(name);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> };
    for (const d of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) visit(d);
  };
  names.forEach(visit);
  return [...seen].sort();
}

/** The dynamic loader and shared libraries an executable needs (empty if it is static). */
export function sharedLibraries(exe: string): { loader?: string; libs: string[] } {
  let out: string;
  try {
    out = execFileSync('ldd', [exe], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return { libs: [] };
  }
  const libs: string[] = [];
  let loader: string | undefined;
  for (const line of out.split('\n')) {
    const lib = /=>\s+(\/\S+)/.exec(line)?.[1];
    if (lib) libs.push(lib);
    else if (/^\s*(\/\S*ld-\S+)/.test(line)) loader = /^\s*(\/\S+)/.exec(line)![1];
  }
  return { loader, libs };
}

function walkFiles(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) walkFiles(p, out);
    else out.push(p);
  }
  return out;
}

/**
 * Copies what the plugin runs on into installDir/rt-<hash> (skipped when that exists) and returns
 * the wrapper script that runs it, as seen from the host.
 */
export function installRuntime(installDir: string, hostInstallDir: string, root = repoRoot): { dir: string; wrapper: string } {
  const packages = packageClosure(root, RUNTIME_PACKAGES);
  const sources = ['package.json', 'src', ...packages.map((p) => join('node_modules', p))];
  const { loader, libs } = sharedLibraries(process.execPath);
  const hash = createHash('sha256').update(`${process.version} ${process.execPath} ${loader} ${libs.join(' ')}\n`);
  for (const s of sources) {
    for (const f of statSync(join(root, s)).isDirectory() ? walkFiles(join(root, s)) : [join(root, s)]) {
      const st = statSync(f);
      hash.update(`${relative(root, f)} ${st.size} ${st.mtimeMs}\n`);
    }
  }
  const name = `rt-${hash.digest('hex').slice(0, 16)}`;
  const dir = join(installDir, name);
  if (!existsSync(dir)) {
    const tmp = `${dir}.tmp`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(join(tmp, 'lib'), { recursive: true });
    for (const s of sources) cpSync(join(root, s), join(tmp, 'app', s), { recursive: true, dereference: true });
    writeFileSync(join(tmp, 'app', ENTRY), "import { register } from 'tsx/esm/api';\nregister();\nconst { pluginMain } = await import('./src/cni/plugin-main.ts');\nawait pluginMain();\n");
    cpSync(process.execPath, join(tmp, 'node'));
    for (const lib of [...libs, ...(loader ? [loader] : [])]) cpSync(lib, join(tmp, 'lib', basename(lib)), { dereference: true });
    renameSync(tmp, dir);
  }
  for (const e of readdirSync(installDir)) if (e.startsWith('rt-') && e !== name) rmSync(join(installDir, e), { recursive: true, force: true });
  const host = `${hostInstallDir.replace(/\/$/, '')}/${name}`;
  const run = loader ? `"$R/lib/${basename(loader)}" --library-path "$R/lib" "$R/node"` : '"$R/node"';
  const wrapper = [
    '#!/bin/sh',
    `# ${PLUGIN_TYPE}: weft's chained CNI plugin. Installed by \`weft cni-install\`, removed when weft is uninstalled.`,
    `# Runs the plugin on the node and C libraries copied from the weft image.`,
    `R='${host}'`,
    `exec ${run} "$R/app/${ENTRY}" "$@"`,
    '',
  ].join('\n');
  return { dir, wrapper };
}

function writeIfChanged(path: string, content: string | Buffer, mode: number): boolean {
  try {
    if (readFileSync(path).equals(Buffer.from(content))) return false;
  } catch {}
  const tmp = join(dirname(path), `.${basename(path)}.weft-tmp`);
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
  return true;
}

export function kubeServerFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host) throw new Error('KUBERNETES_SERVICE_HOST is not set: pass --kube-server (not running in a pod?)');
  return `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The kubeconfig (JSON, which is YAML) and token copy the plugin uses; true if anything changed. */
export function writeKubeconfig(o: CniInstallOptions): boolean {
  const token = readFileSync(join(o.serviceAccountDir, 'token'));
  const ca = readFileSync(join(o.serviceAccountDir, 'ca.crt'));
  const host = (f: string) => `${o.hostInstallDir.replace(/\/$/, '')}/${f}`;
  const kubeconfig = {
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': 'weft-cni',
    clusters: [{ name: 'local', cluster: { server: o.kubeServer ?? kubeServerFromEnv(), 'certificate-authority-data': ca.toString('base64') } }],
    users: [{ name: 'weft-cni', user: { tokenFile: host('token') } }],
    contexts: [{ name: 'weft-cni', context: { cluster: 'local', user: 'weft-cni' } }],
  };
  const a = writeIfChanged(join(o.installDir, 'token'), token, 0o600);
  const b = writeIfChanged(join(o.installDir, 'kubeconfig'), JSON.stringify(kubeconfig, null, 2) + '\n', 0o600);
  return a || b;
}

/** weft's entry in the conflist. */
export function pluginEntry(o: CniInstallOptions): Record<string, unknown> {
  return {
    type: PLUGIN_TYPE,
    kubeconfig: `${o.hostInstallDir.replace(/\/$/, '')}/kubeconfig`,
    agentSocket: o.agentSocket,
    excludeNamespaces: o.excludeNamespaces,
    ...(o.cgroupRoot && { cgroupRoot: o.cgroupRoot }),
  };
}

export interface InstallState {
  /** The configuration file weft is chained into, or undefined while there is none. */
  confFile?: string;
  changed: string[];
}

/** One pass: binary, kubeconfig, chain. Safe to repeat; reports what it changed. */
export function installOnce(o: CniInstallOptions, wrapper: string): InstallState {
  mkdirSync(o.installDir, { recursive: true });
  const changed: string[] = [];
  if (writeIfChanged(join(o.cniBinDir, PLUGIN_TYPE), wrapper, 0o755)) changed.push(join(o.cniBinDir, PLUGIN_TYPE));
  if (writeKubeconfig(o)) changed.push(join(o.installDir, 'kubeconfig'));
  const r = installInto(o.cniConfDir, pluginEntry(o));
  if (r.changed && r.file) changed.push(r.file);
  return { confFile: r.file, changed };
}

/** Takes weft out of the chain first (so no pod needs the plugin), then removes the plugin. */
export function uninstall(o: CniInstallOptions): string[] {
  const changed = removeFromDir(o.cniConfDir).map((f) => join(o.cniConfDir, f));
  for (const p of [join(o.cniBinDir, PLUGIN_TYPE), join(o.installDir, 'kubeconfig'), join(o.installDir, 'token')]) {
    if (existsSync(p)) {
      rmSync(p, { force: true });
      changed.push(p);
    }
  }
  return changed;
}

/** The installer's own API access: the service account it runs as. */
function installerKube(o: CniInstallOptions): KubeAccess {
  return {
    server: o.kubeServer ?? kubeServerFromEnv(),
    ca: readFileSync(join(o.serviceAccountDir, 'ca.crt'), 'utf8'),
    token: () => readFileSync(join(o.serviceAccountDir, 'token'), 'utf8').trim(),
    insecure: false,
  };
}

/**
 * Whether this stop is an uninstall: the DaemonSet is gone or has a deletion timestamp. In doubt
 * (the API cannot be asked) it is not: a plugin left chained blocks only pods that should be
 * captured, one taken out lets them start uncaptured.
 */
export async function isUninstall(o: CniInstallOptions): Promise<{ uninstall: boolean; why: string }> {
  const name = o.daemonSet ?? 'weft-agent';
  try {
    const ns = readFileSync(join(o.serviceAccountDir, 'namespace'), 'utf8').trim();
    const ds = await kubeGet<{ metadata?: { deletionTimestamp?: string } }>(installerKube(o), `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/daemonsets/${encodeURIComponent(name)}`, 5_000);
    if (!ds) return { uninstall: true, why: `DaemonSet ${ns}/${name} is gone` };
    if (ds.metadata?.deletionTimestamp) return { uninstall: true, why: `DaemonSet ${ns}/${name} is being deleted` };
    return { uninstall: false, why: `DaemonSet ${ns}/${name} stays (a restart or rollout)` };
  } catch (e) {
    return { uninstall: false, why: `cannot tell whether DaemonSet ${name} is being deleted (${(e as Error).message})` };
  }
}

/** On SIGTERM: unchain and remove the plugin on uninstall only; what was removed and why. */
export async function stopInstaller(o: CniInstallOptions): Promise<{ uninstalled: boolean; why: string; changed: string[] }> {
  const d = await isUninstall(o);
  return { uninstalled: d.uninstall, why: d.why, changed: d.uninstall ? uninstall(o) : [] };
}
