// The agent's last good mesh state on the node, so an agent restarted while the control plane is
// away serves from it (HBONE to the workloads it knew, their policies) instead of failing every
// connection or, worse, passing mesh traffic through in plaintext. Kept in the xDS resource form
// with versions: loading goes through the same decoder as a response (DeltaXdsClient.restore),
// and the versions let the control plane send only what changed since.
import type { Logger } from 'pino';
import { readPrivateFile, writePrivateFile } from '../../util/private-files.ts';
import type { XdsResources } from '../xds/delta-client.ts';

const FORMAT = 'weft-xds-cache/1';

interface SavedFile {
  format: string;
  savedAt: string;
  resources: Record<string, { name: string; version: string; value: string }[]>;
}

export function saveSnapshot(file: string, resources: XdsResources): void {
  const out: SavedFile = { format: FORMAT, savedAt: new Date().toISOString(), resources: {} };
  for (const [typeUrl, list] of Object.entries(resources))
    out.resources[typeUrl] = list.map((r) => ({ name: r.name, version: r.version, value: Buffer.from(r.value).toString('base64') }));
  writePrivateFile(file, JSON.stringify(out));
}

/** The saved resources, undefined when there are none; throws, naming the file and field, when the file is not one. */
export function loadSnapshot(file: string): { resources: XdsResources; savedAt: string } | undefined {
  const text = readPrivateFile(file);
  if (text === undefined) return undefined;
  const bad = (why: string): never => {
    throw new Error(`${file}: ${why}`);
  };
  let v: SavedFile;
  try {
    v = JSON.parse(text) as SavedFile;
  } catch (e) {
    return bad(`not JSON: ${(e as Error).message}`);
  }
  if (v?.format !== FORMAT) bad(`format is ${JSON.stringify(v?.format)}, want "${FORMAT}"`);
  if (typeof v.resources !== 'object' || v.resources === null) bad('resources: not an object');
  const resources: XdsResources = {};
  for (const [typeUrl, list] of Object.entries(v.resources)) {
    if (!Array.isArray(list)) bad(`resources["${typeUrl}"]: not a list`);
    resources[typeUrl] = list.map((r, i) => {
      if (typeof r?.name !== 'string' || typeof r.version !== 'string' || typeof r.value !== 'string') bad(`resources["${typeUrl}"][${i}]: want name, version and value strings`);
      return { name: r.name, version: r.version, value: Buffer.from(r.value, 'base64') };
    });
  }
  return { resources, savedAt: String(v.savedAt) };
}

/** Writes the state at most every `intervalMs` after it changed (and once more on flush). */
export class SnapshotWriter {
  private timer?: NodeJS.Timeout;
  private dirty = false;

  constructor(
    private readonly file: string,
    private readonly get: () => XdsResources,
    private readonly log: Logger,
    private readonly intervalMs = 5000,
  ) {}

  changed(): void {
    this.dirty = true;
    if (!this.timer) this.timer = setTimeout(() => this.flush(), this.intervalMs).unref();
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.dirty) return;
    this.dirty = false;
    try {
      saveSnapshot(this.file, this.get());
    } catch (e) {
      this.log.warn({ file: this.file, err: (e as Error).message }, 'cannot save the mesh state cache');
    }
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
