// Consistent hashing over a cluster's endpoints: Envoy's ring hash (each endpoint hashed onto a
// ring ceil(minimum_ring_size / n) times, a key goes to the first point at or after it) and Maglev
// (a lookup table filled from each endpoint's permutation). The hash function is not Envoy's
// xxHash: every waypoint replica places keys the same way, but not where an Envoy would. So the
// ring is built with at most RING_POINTS points whatever minimum_ring_size asks (up to 8M in
// Envoy), and a Maglev table with at most MAGLEV_ENTRIES (Envoy's default size; up to 5000011 in
// Envoy): the balance is the same, and a configured size cannot block the event loop for seconds.
import type { Endpoint } from '../router/table.ts';

/** FNV-1a over UTF-16 code units, finished with murmur3's avalanche: 32 well-mixed bits. */
export function hash32(s: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export const endpointKey = (e: Endpoint) => `${e.address}:${e.port}`;

/** A built ring or table: the endpoint index for a 32-bit hash. */
export interface HashTable {
  lookup(hash: number): number;
}

export const RING_POINTS = 65_536;

export function ringHash(endpoints: readonly Endpoint[], minimumRingSize: number, maximumRingSize: number): HashTable {
  const n = endpoints.length;
  if (n >= 2 ** 21) throw new Error(`ring hash over ${n} endpoints: more than the ring can index`);
  const per = Math.max(1, Math.ceil(Math.min(Math.max(minimumRingSize, n), maximumRingSize, RING_POINTS) / n));
  // Each point packed as hash * 2^21 + owner (under 2^53): a plain numeric sort orders them.
  const packed = new Float64Array(n * per);
  let k = 0;
  endpoints.forEach((e, i) => {
    const key = endpointKey(e);
    for (let j = 0; j < per; j++) packed[k++] = hash32(`${key}_${j}`) * 2 ** 21 + i;
  });
  packed.sort();
  const hashes = Uint32Array.from(packed, (p) => Math.floor(p / 2 ** 21));
  const owners = Uint32Array.from(packed, (p) => p % 2 ** 21);
  const first = (hash: number) => {
    let lo = 0;
    let hi = hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid]! < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo === hashes.length ? 0 : lo;
  };
  return {
    lookup: (hash) => owners[first(hash)]!,
  };
}

/** A prime (Envoy's default table size). */
export const MAGLEV_ENTRIES = 65_537;

export function maglev(endpoints: readonly Endpoint[], configuredSize: number): HashTable {
  const tableSize = Math.min(configuredSize, MAGLEV_ENTRIES);
  const n = endpoints.length;
  const table = new Int32Array(tableSize).fill(-1);
  // Each endpoint's permutation (offset + j * skip) mod M, walked by adding skip.
  const pos = Float64Array.from(endpoints, (e) => hash32(endpointKey(e), 0) % tableSize);
  const skip = Float64Array.from(endpoints, (e) => (hash32(endpointKey(e), 1) % (tableSize - 1)) + 1);
  let filled = 0;
  while (filled < tableSize) {
    for (let i = 0; i < n && filled < tableSize; i++) {
      let c = pos[i]!;
      const step = skip[i]!;
      while (table[c]! >= 0) {
        c += step;
        if (c >= tableSize) c -= tableSize;
      }
      table[c] = i;
      c += step;
      pos[i] = c >= tableSize ? c - tableSize : c;
      filled++;
    }
  }
  return {
    lookup: (hash) => table[hash % tableSize]!,
  };
}
