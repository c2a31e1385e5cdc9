// The control plane's current resources per type URL, each with a content version, replaced as
// a whole on every model build. Replacing reports exactly what changed, which is what Delta xDS
// sends. A body that is the same Uint8Array as before is the same resource (builders reuse the
// encodings of what did not change), so only new bodies are hashed.
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';

export interface Resource {
  name: string;
  version: string;
  body: Uint8Array;
  /** Its Delta xDS wire form, encoded on first use (delta-wire.ts). */
  wire?: Uint8Array;
}

export class ResourceStore extends EventEmitter {
  private readonly types = new Map<string, Map<string, Resource>>();
  /** Bumped on every change; sent as system_version_info. */
  generation = 0;

  get(typeUrl: string): ReadonlyMap<string, Resource> {
    return this.types.get(typeUrl) ?? new Map();
  }

  /** Replaces all resources of a type; emits 'change' (typeUrl, changed names, removed names). */
  replace(typeUrl: string, bodies: Map<string, Uint8Array>): { changed: string[]; removed: string[] } {
    const prev = this.types.get(typeUrl) ?? new Map<string, Resource>();
    const next = new Map<string, Resource>();
    const changed: string[] = [];
    for (const [name, body] of bodies) {
      const old = prev.get(name);
      if (old?.body === body) {
        next.set(name, old);
        continue;
      }
      const version = createHash('sha256').update(body).digest('base64url').slice(0, 16);
      next.set(name, old?.version === version ? old : { name, version, body });
      if (old?.version !== version) changed.push(name);
    }
    const removed = [...prev.keys()].filter((n) => !next.has(n));
    this.types.set(typeUrl, next);
    if (changed.length || removed.length) {
      this.generation++;
      this.emit('change', typeUrl, changed, removed);
    }
    return { changed, removed };
  }
}
