// Typed BPF maps: the native layer moves raw bytes, these codecs mirror the C structs in
// bpf/include/weft_maps.h. BpfMap checks codec sizes against the kernel's map info when it opens
// a map, so a struct changed on one side only fails at startup, not with garbled data.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { unmapV4 } from '../util/cidr.ts';
import { native } from './addon.ts';

export interface Codec<T> {
  size: number;
  encode(v: T): Buffer;
  decode(b: Buffer): T;
}

const LE = os.endianness() === 'LE';
const AF_INET = 2;
const AF_INET6 = 10;

// BPF structs use host byte order for ports and counters.
const w16 = (b: Buffer, v: number, o: number) => (LE ? b.writeUInt16LE(v, o) : b.writeUInt16BE(v, o));
const r16 = (b: Buffer, o: number) => (LE ? b.readUInt16LE(o) : b.readUInt16BE(o));
const w32 = (b: Buffer, v: number, o: number) => (LE ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o));
const r32 = (b: Buffer, o: number) => (LE ? b.readUInt32LE(o) : b.readUInt32BE(o));
const w64 = (b: Buffer, v: bigint, o: number) => (LE ? b.writeBigUInt64LE(v, o) : b.writeBigUInt64BE(v, o));
const r64 = (b: Buffer, o: number) => (LE ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o));

export const u32: Codec<number> = {
  size: 4,
  encode: (v) => {
    const b = Buffer.alloc(4);
    w32(b, v, 0);
    return b;
  },
  decode: (b) => r32(b, 0),
};

export const u64: Codec<bigint> = {
  size: 8,
  encode: (v) => {
    const b = Buffer.alloc(8);
    w64(b, v, 0);
    return b;
  },
  decode: (b) => r64(b, 0),
};

/** An IP endpoint; family follows from the address. */
export interface Endpoint {
  address: string;
  port: number;
}

/** '::ffff:1.2.3.4' -> '1.2.3.4' (what an IPv4 peer looks like on a dual-stack socket). */
export { unmapV4 };

/**
 * The four octets of a dotted-quad IPv4 address in decimal (what net.isIPv4 accepts: no leading
 * zeros), or undefined. By hand, not split and regex: it runs for every captured connection.
 */
export function ipv4Octets(address: string): [number, number, number, number] | undefined {
  const out: [number, number, number, number] = [0, 0, 0, 0];
  let part = 0;
  let digits = 0;
  let v = 0;
  for (let i = 0; i <= address.length; i++) {
    const c = i < address.length ? address.charCodeAt(i) : 46; // a '.' after the end closes the last octet
    if (c === 46) {
      if (digits === 0 || part > 3) return undefined;
      out[part++] = v;
      v = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && v === 0) return undefined; // a leading zero
      v = v * 10 + (c - 48);
      if (++digits > 3 || v > 255) return undefined;
    } else return undefined;
  }
  return part === 4 ? out : undefined;
}

function ipv6Bytes(address: string): Buffer {
  const out = Buffer.alloc(16);
  let text = address;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const p = v4[1].split('.').map(Number);
    text = text.slice(0, -v4[1].length) + `${(((p[0] ?? 0) << 8) | (p[1] ?? 0)).toString(16)}:${(((p[2] ?? 0) << 8) | (p[3] ?? 0)).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function ipv6String(b: Buffer): string {
  const g = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** Writes struct weft_endpoint (20 bytes) at offset o. */
function writeEndpoint(b: Buffer, e: Endpoint, o: number): void {
  const address = unmapV4(e.address);
  const v4 = ipv4Octets(address);
  if (v4) {
    b[o] = v4[0];
    b[o + 1] = v4[1];
    b[o + 2] = v4[2];
    b[o + 3] = v4[3];
    b[o + 18] = AF_INET;
  } else if (net.isIPv6(address)) {
    ipv6Bytes(address).copy(b, o);
    b[o + 18] = AF_INET6;
  } else {
    throw new TypeError(`not an IP address: '${e.address}'`);
  }
  w16(b, e.port, o + 16);
}

function readEndpoint(b: Buffer, o: number): Endpoint & { family: 4 | 6 } {
  if (b[o + 18] === AF_INET6) return { family: 6, address: ipv6String(b.subarray(o, o + 16)), port: r16(b, o + 16) };
  return { family: 4, address: `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`, port: r16(b, o + 16) };
}

/** struct weft_peer_key: the client end of a captured connection in a pod netns. */
export interface PeerKey {
  netnsCookie: bigint;
  client: Endpoint;
}

export const peerKey: Codec<PeerKey> = {
  size: 32,
  encode: (k) => {
    const b = Buffer.alloc(32);
    w64(b, k.netnsCookie, 0);
    writeEndpoint(b, k.client, 8);
    return b;
  },
  decode: (b) => ({ netnsCookie: r64(b, 0), client: readEndpoint(b, 8) }),
};

/** struct weft_orig: what the app connected to, before capture rewrote it. */
export interface OriginalDst {
  address: string;
  port: number;
  family: 4 | 6;
  /** The app used an AF_INET6 socket with a v4-mapped address. */
  v4Mapped: boolean;
  netnsCookie: bigint;
  /** cgroup of the task that called connect() (a pod's container cgroup). */
  cgroupId: bigint;
}

export const origDst: Codec<OriginalDst> = {
  size: 40,
  encode: (v) => {
    const b = Buffer.alloc(40);
    writeEndpoint(b, v, 0);
    w32(b, v.v4Mapped ? 1 : 0, 20);
    w64(b, v.netnsCookie, 24);
    w64(b, v.cgroupId, 32);
    return b;
  },
  decode: (b) => {
    // One literal of a fixed shape, not a spread: this runs once per captured connection.
    const e = readEndpoint(b, 0);
    return { address: e.address, port: e.port, family: e.family, v4Mapped: (r32(b, 20) & 1) !== 0, netnsCookie: r64(b, 24), cgroupId: r64(b, 32) };
  },
};

/** struct weft_excl_key: netnsCookie 0n applies to every pod. */
export interface ExclKey {
  netnsCookie: bigint;
  port: number;
}

export const exclKey: Codec<ExclKey> = {
  size: 16,
  encode: (k) => {
    const b = Buffer.alloc(16);
    w64(b, k.netnsCookie, 0);
    w32(b, k.port, 8);
    return b;
  },
  decode: (b) => ({ netnsCookie: r64(b, 0), port: r32(b, 8) }),
};

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/** A BPF map fd with typed keys and values. Owns its fd: close() it. */
export class BpfMap<K, V> {
  readonly name: string;
  private closed = false;
  /** Accesses go through a native handle: the fd is checked to be this map once, not per access. */
  private readonly handle: number;

  constructor(
    private readonly mapFd: number,
    readonly key: Codec<K>,
    readonly value: Codec<V>,
  ) {
    const info = native().mapInfo(mapFd);
    this.name = info.name;
    if (info.keySize !== key.size || info.valueSize !== value.size) {
      throw new Error(
        `BPF map ${info.name}: kernel has key/value sizes ${info.keySize}/${info.valueSize}, TypeScript codecs ` +
          `${key.size}/${value.size}; bpf/include and src/bpf/maps.ts disagree (rebuild, or fix the codec)`,
      );
    }
    this.handle = native().mapHandle(mapFd);
  }

  /** The map fd; throws once closed (the number may already belong to something else). */
  get fd(): number {
    if (this.closed) throw new Error(`BPF map ${this.name} is closed`);
    return this.mapFd;
  }

  /** Opens a pinned map (e.g. after an agent restart). */
  static open<K, V>(pinPath: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    const fd = native().objGet(pinPath);
    try {
      return new BpfMap(fd, key, value);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  private get h(): number {
    if (this.closed) throw new Error(`BPF map ${this.name} is closed`);
    return this.handle;
  }

  get(k: K): V | undefined {
    const b = native().handleLookup(this.h, this.key.encode(k), this.value.size);
    return b ? this.value.decode(b) : undefined;
  }

  set(k: K, v: V, flags = BPF_ANY): void {
    native().handleUpdate(this.h, this.key.encode(k), this.value.encode(v), flags);
  }

  delete(k: K): boolean {
    return native().handleDelete(this.h, this.key.encode(k));
  }

  /** Lookup and delete in one step (falls back to two on kernels without it for this map type). */
  take(k: K): V | undefined {
    const key = this.key.encode(k);
    try {
      const b = native().handleLookup(this.h, key, this.value.size, true);
      return b ? this.value.decode(b) : undefined;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code !== 'EINVAL' && code !== 'ENOTSUPP' && code !== 'EOPNOTSUPP') throw e;
      const v = this.get(k);
      if (v !== undefined) this.delete(k);
      return v;
    }
  }

  *keys(): Generator<K> {
    let cur: Buffer | null = null;
    while ((cur = native().handleNextKey(this.h, cur, this.key.size)) !== null) yield this.key.decode(cur);
  }

  *entries(): Generator<[K, V]> {
    for (const k of this.keys()) {
      const v = this.get(k);
      if (v !== undefined) yield [k, v];
    }
  }

  /** Idempotent: a second close must not hit an fd number the process has reused. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    native().mapRelease(this.handle);
    fs.closeSync(this.mapFd);
  }
}
