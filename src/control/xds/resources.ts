// The control plane's current resources per type URL, each with a content version. Publishers
// patch them with what a build changed (or replace a type whole); either reports exactly what
// changed, which is what Delta xDS sends. A body that is the same Uint8Array as before is the same
// resource (builders reuse the encodings of what did not change), so only new bodies are hashed.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Map as PMap } from 'immutable';

export interface Resource {
  name: string;
  version: string;
  body: Uint8Array;
  /** Its Delta xDS wire form, encoded on first use (delta-wire.ts). */
  wire?: Uint8Array;
}

export class ResourceStore extends EventEmitter {
  private readonly byType = new Map<string, Map<string, Resource>>();
  /** name -> version per type, persistent: streams that hold exactly this share it instead of a copy each. */
  private readonly versionMaps = new Map<string, PMap<string, string>>();
  /** Bumped on every change; sent as system_version_info. */
  generation = 0;

  /** The current name -> version map of a type (an immutable value). */
  versions(typeUrl: string): PMap<string, string> {
    return this.versionMaps.get(typeUrl) ?? PMap();
  }

  /** The type URLs that hold resources. */
  types(): string[] {
    return [...this.byType].filter(([, m]) => m.size).map(([t]) => t);
  }

  get(typeUrl: string): ReadonlyMap<string, Resource> {
    return this.byType.get(typeUrl) ?? new Map();
  }

  /** Replaces all resources of a type; emits 'change' (typeUrl, changed names, removed names). */
  replace(typeUrl: string, bodies: ReadonlyMap<string, Uint8Array>): { changed: string[]; removed: string[] } {
    const removed: string[] = [];
    for (const name of this.get(typeUrl).keys()) if (!bodies.has(name)) removed.push(name);
    return this.patch(typeUrl, bodies, removed);
  }

  /** Sets some resources of a type and removes others; emits 'change' when anything differs. */
  patch(typeUrl: string, set: ReadonlyMap<string, Uint8Array>, remove: readonly string[]): { changed: string[]; removed: string[] } {
    let current = this.byType.get(typeUrl);
    if (!current) this.byType.set(typeUrl, (current = new Map()));
    const changed: string[] = [];
    const removed: string[] = [];
    for (const [name, body] of set) {
      const old = current.get(name);
      if (old?.body === body) continue;
      const version = createHash('sha256').update(body).digest('base64url').slice(0, 16);
      if (old?.version === version) continue;
      current.set(name, { name, version, body });
      changed.push(name);
    }
    for (const name of remove) if (!set.has(name) && current.delete(name)) removed.push(name);
    if (changed.length || removed.length) {
      this.versionMaps.set(
        typeUrl,
        this.versions(typeUrl).withMutations((m) => {
          for (const name of changed) m.set(name, current.get(name)!.version);
          for (const name of removed) m.delete(name);
        }),
      );
      this.generation++;
      this.emit('change', typeUrl, changed, removed);
    }
    return { changed, removed };
  }
}
