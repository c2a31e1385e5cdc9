// Hostile arguments to the native addon's BPF calls: Buffers of the wrong size, fds that are not
// maps, out-of-range numbers, arguments that throw while an object is loading. Each must end in a
// clear JavaScript error and leave the process as it was (no memory written out of bounds, no fd
// or libbpf object left behind).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bpfObjectPath, native, type LoadedObject } from '../../src/bpf/addon.ts';
import { WEFT } from '../../src/bpf/index.ts';
import { exclKey, origDst, peerKey, u32 } from '../../src/bpf/maps.ts';
import { Fixture } from './env.ts';

const fx = new Fixture();
let obj: LoadedObject;
let origFd: number; // hash map, key weft_peer_key (32 bytes), value weft_orig
let exclFd: number; // hash map, key weft_excl_key (16 bytes), value u32
let progFd: number;

const openFds = () => fs.readdirSync('/proc/self/fd').length;

beforeAll(() => {
  const pinRoot = fx.pinRoot();
  fs.mkdirSync(pinRoot);
  obj = native().loadObject(bpfObjectPath('connect4'), { pinRoot });
  fx.defer(() => [...Object.values(obj.programs), ...Object.values(obj.maps)].forEach((x) => fs.closeSync(x.fd)));
  origFd = obj.maps[WEFT.MAP_ORIG_DST]!.fd;
  exclFd = obj.maps[WEFT.MAP_OUT_EXCL]!.fd;
  progFd = Object.values(obj.programs)[0]!.fd;
});
afterAll(() => fx.cleanup());

const key = () => peerKey.encode({ netnsCookie: 7n, client: { address: '10.9.8.7', port: 4242 } });
const value = () =>
  origDst.encode({ address: '10.96.0.10', port: 80, family: 4, v4Mapped: false, netnsCookie: 7n, cgroupId: 9n });

describe('map access checks Buffer sizes against the map itself', () => {
  it('has a real entry to read back with the right sizes', () => {
    native().mapUpdate(origFd, key(), value());
    expect(native().mapLookup(origFd, key(), origDst.size)).toEqual(value());
  });

  it('rejects a short or long key on every operation, naming the map', () => {
    for (const bad of [Buffer.alloc(0), Buffer.alloc(1), key().subarray(0, 31), Buffer.concat([key(), Buffer.alloc(1)])]) {
      const msg = new RegExp(`key is ${bad.length} bytes; BPF map ${WEFT.MAP_ORIG_DST} has 32-byte keys`);
      expect(() => native().mapLookup(origFd, bad, origDst.size)).toThrow(msg);
      expect(() => native().mapLookup(origFd, bad, origDst.size, true)).toThrow(msg);
      expect(() => native().mapUpdate(origFd, bad, value())).toThrow(msg);
      expect(() => native().mapDelete(origFd, bad)).toThrow(msg);
      expect(() => native().mapNextKey(origFd, bad, peerKey.size)).toThrow(msg);
    }
    // The entry is untouched.
    expect(native().mapLookup(origFd, key(), origDst.size)).toEqual(value());
  });

  it('rejects a value size other than the map\'s (a small one would let the kernel write past the Buffer)', () => {
    for (const size of [0, 1, origDst.size - 1, origDst.size + 8, 1 << 20]) {
      expect(() => native().mapLookup(origFd, key(), size)).toThrow(RangeError);
      expect(() => native().mapLookup(origFd, key(), size)).toThrow(/value is \d+ bytes; BPF map weft_orig_dst has 40-byte values/);
      expect(() => native().mapUpdate(origFd, key(), Buffer.alloc(size))).toThrow(RangeError);
    }
    expect(() => native().mapNextKey(origFd, null, 4)).toThrow(/key is 4 bytes; BPF map weft_orig_dst has 32-byte keys/);
    // A codec of the other map used on this one.
    expect(() => native().mapUpdate(exclFd, key(), u32.encode(1))).toThrow(/BPF map weft_out_excl has 16-byte keys/);
    expect(() => native().mapUpdate(exclFd, exclKey.encode({ netnsCookie: 0n, port: 1 }), value())).toThrow(/4-byte values/);
    expect(native().mapLookup(origFd, key(), origDst.size)).toEqual(value());
  });

  it('a wrong-size error is not an errno (take() must not fall back and retry on it)', () => {
    try {
      native().mapLookup(origFd, Buffer.alloc(3), origDst.size, true);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(RangeError);
      expect((e as { code?: unknown }).code).toBeUndefined();
    }
  });

  it('says so when the fd is not a BPF map', () => {
    const file = fs.openSync('/proc/self/status', 'r');
    try {
      expect(() => native().mapLookup(file, key(), origDst.size)).toThrow(/is not a BPF map/);
      expect(() => native().mapUpdate(progFd, key(), value())).toThrow(/is not a BPF map \(anon_inode:bpf-prog\)/);
      expect(() => native().mapDelete(progFd, key())).toThrow(/is not a BPF map/);
      expect(() => native().mapNextKey(progFd, null, 32)).toThrow(/is not a BPF map/);
    } finally {
      fs.closeSync(file);
    }
    expect(() => native().mapLookup(1 << 30, key(), origDst.size)).toThrow(/not an open file descriptor/);
  });

  it('rejects out-of-range and non-integer numbers instead of wrapping them', () => {
    const n = native() as unknown as Record<string, (...a: unknown[]) => unknown>;
    for (const v of [2 ** 32 + origDst.size, -1, NaN, 1.5, '40', Infinity]) {
      expect(() => n.mapLookup!(origFd, key(), v)).toThrow(/valueSize must be an integer in \[0, 2\^32\)/);
    }
    expect(() => n.mapNextKey!(origFd, null, 2 ** 32 + 32)).toThrow(/keySize must be an integer/);
    expect(() => n.mapUpdate!(origFd, key(), value(), 2 ** 40)).toThrow(/flags must be an integer/);
    expect(() => n.mapNextKey!(origFd, 'abc', 32)).toThrow(/key must be a Buffer, or null/);
    expect(() => n.mapLookup!(origFd, 'k', 40)).toThrow(/key must be a Buffer/);
    expect(() => n.linkCreate!(progFd, 0, 2 ** 32 + 10)).toThrow(/attachType must be an integer/);
  });

  it('iterates with the right sizes', () => {
    const keys: Buffer[] = [];
    let cur: Buffer | null = null;
    for (let i = 0; i < 100 && (cur = native().mapNextKey(origFd, cur, peerKey.size)) !== null; i++) keys.push(cur);
    expect(keys).toContainEqual(key());
    expect(native().mapDelete(origFd, key())).toBe(true);
  });
});

describe('map handles: checked once, through a duplicate only the addon holds', () => {
  it('reads and writes through the handle with the same size checks, and refuses a non-map fd', () => {
    const h = native().mapHandle(origFd);
    try {
      native().handleUpdate(h, key(), value());
      expect(native().handleLookup(h, key(), origDst.size)).toEqual(value());
      expect(() => native().handleLookup(h, Buffer.alloc(3), origDst.size)).toThrow(/key is 3 bytes; BPF map weft_orig_dst has 32-byte keys/);
      expect(() => native().handleLookup(h, key(), origDst.size + 8)).toThrow(RangeError);
      expect(() => native().handleUpdate(h, key(), Buffer.alloc(1))).toThrow(/value is 1 bytes/);
      expect(() => native().handleNextKey(h, null, 4)).toThrow(/has 32-byte keys/);
      expect(native().handleNextKey(h, null, peerKey.size)).toBeInstanceOf(Buffer);
      expect(native().handleLookup(h, key(), origDst.size, true)).toEqual(value()); // and deleted
      expect(native().handleDelete(h, key())).toBe(false);
    } finally {
      native().mapRelease(h);
    }
    expect(() => native().mapHandle(progFd)).toThrow(/is not a BPF map \(anon_inode:bpf-prog\)/);
    expect(() => native().mapHandle(1 << 30)).toThrow(/not an open file descriptor/);
  });

  it('a released or made-up handle is refused, and release closes the duplicate', () => {
    const before = openFds();
    const h = native().mapHandle(exclFd);
    expect(openFds()).toBe(before + 1);
    expect(native().mapRelease(h)).toBe(true);
    expect(openFds()).toBe(before);
    expect(native().mapRelease(h)).toBe(false);
    expect(() => native().handleLookup(h, exclKey.encode({ netnsCookie: 0n, port: 1 }), 4)).toThrow(/unknown BPF map handle/);
    const n = native() as unknown as Record<string, (...a: unknown[]) => unknown>;
    for (const bad of [0, -1, 1.5, 2 ** 32, 'x', null]) expect(() => n.handleDelete!(bad, Buffer.alloc(16))).toThrow(/map handle must be a number/);
  });

  it('keeps meaning its map after the fd it was made from is closed and its number reused', () => {
    // A raw fd number names whatever file holds it now; the handle's duplicate does not move.
    const pin = obj.maps[WEFT.MAP_OUT_EXCL]!.pinPath!;
    const mapFd = native().objGet(pin);
    const h = native().mapHandle(mapFd);
    fs.closeSync(mapFd);
    const other = fs.openSync('/proc/self/status', 'r'); // the lowest free number: the closed map fd's
    expect(other).toBe(mapFd);
    try {
      const k = exclKey.encode({ netnsCookie: 0n, port: 4343 });
      native().handleUpdate(h, k, u32.encode(5));
      expect(native().mapLookup(exclFd, k, 4)).toEqual(u32.encode(5));
      expect(native().handleDelete(h, k)).toBe(true);
    } finally {
      fs.closeSync(other);
      native().mapRelease(h);
    }
  });
});

describe('loadObject closes the libbpf object on every error path', () => {
  it('does not leak an fd per call when a reuseMaps argument throws', () => {
    const reuse = { [WEFT.MAP_ORIG_DST]: origFd, [WEFT.MAP_OUT_EXCL]: 'not an fd' } as unknown as Record<string, number>;
    const call = () => native().loadObject(bpfObjectPath('connect4'), { reuseMaps: reuse });
    expect(call).toThrow(TypeError);
    const before = openFds();
    for (let i = 0; i < 50; i++) expect(call).toThrow(TypeError);
    expect(openFds()).toBe(before);
    expect(call).toThrow(/reuseMaps\.weft_out_excl must be a file descriptor/);
  });

  it('does not leak when a reuseMaps getter throws or names a map the object lacks', () => {
    const throwing = {
      [WEFT.MAP_ORIG_DST]: origFd,
      get [WEFT.MAP_OUT_EXCL](): number {
        throw new Error('getter says no');
      },
    };
    const before = openFds();
    for (let i = 0; i < 30; i++) {
      expect(() => native().loadObject(bpfObjectPath('connect4'), { reuseMaps: throwing })).toThrow(/getter says no/);
      expect(() => native().loadObject(bpfObjectPath('connect4'), { reuseMaps: { [WEFT.MAP_ORIG_DST]: origFd, nope: origFd } })).toThrow(
        /reuse map nope: .*the object has no map of that name/,
      );
    }
    expect(openFds()).toBe(before);
  });

  it('does not leak when loading fails (verifier rejection)', () => {
    const bad = path.join(path.dirname(bpfObjectPath('connect4')), 'testdata', 'bad_verifier.bpf.o');
    expect(() => native().loadObject(bad)).toThrow();
    const before = openFds();
    for (let i = 0; i < 20; i++) expect(() => native().loadObject(bad, { reuseMaps: {} })).toThrow(/verifier/);
    expect(openFds()).toBe(before);
  });
});
