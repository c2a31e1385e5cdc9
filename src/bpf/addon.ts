// Typed access to build/Release/weft_native.node, the thin native layer (bpf syscalls through
// libbpf, setns sockets). Loaded lazily so importing src/bpf never fails on a machine without the
// build; the first call says how to fix that. Everything here deals in plain fds: close them with
// fs.closeSync.
import { createRequire } from 'node:module';
import path from 'node:path';
import { nativeBuildDir, repoRoot } from '../util/paths.ts';

export interface LoadedProgram {
  fd: number;
  type: number;
  typeName: string;
  /** Expected attach type from the SEC() name; pass it to linkCreate. */
  attachType: number;
  attachTypeName: string;
  section: string;
}

export interface LoadedMap {
  fd: number;
  type: number;
  typeName: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  pinPath?: string;
}

export interface LoadedObject {
  programs: Record<string, LoadedProgram>;
  maps: Record<string, LoadedMap>;
  /** libbpf messages printed while loading (warnings; debug too with {debug: true}). */
  log: string;
}

export interface SockName {
  family: 4 | 6;
  address: string;
  port: number;
}

export interface NativeSocketSpec {
  family?: 4 | 6;
  udp?: boolean;
  nonblock?: boolean;
  mark?: number;
  transparent?: boolean;
  reuseAddr?: boolean;
  reusePort?: boolean;
  freebind?: boolean;
  v6Only?: boolean;
  /** SO_SNDBUF in bytes (the kernel doubles it); a listener's is inherited by what it accepts. */
  sendBuffer?: number;
  bind?: { address?: string; port?: number };
  listen?: number;
}

export interface NativeProbe {
  progTypes: Record<string, boolean>;
  mapTypes: Record<string, boolean>;
  linkAttachTypes: Record<string, boolean>;
  helpers: Record<string, boolean>;
}

/** The native functions, one per syscall-level operation (see native/*.cc). */
export interface NativeAddon {
  loadObject(file: string, opts?: { pinRoot?: string; reuseMaps?: Record<string, number>; debug?: boolean }): LoadedObject;
  linkCreate(progFd: number, targetFd: number, attachType: number): number;
  linkDetach(linkFd: number): void;
  objPin(fd: number, pinPath: string): void;
  objGet(pinPath: string): number;
  mapInfo(fd: number): { id: number; name: string; type: number; typeName: string; keySize: number; valueSize: number; maxEntries: number; flags: number };
  progInfo(fd: number): { id: number; name: string; type: number; typeName: string };
  linkInfo(fd: number): { id: number; type: number; typeName: string; progId: number; cgroupId?: bigint; netnsIno?: number; attachType?: number };
  /** With del=true: BPF_MAP_LOOKUP_AND_DELETE_ELEM. Returns null for a missing key. */
  mapLookup(fd: number, key: Buffer, valueSize: number, del?: boolean): Buffer | null;
  mapUpdate(fd: number, key: Buffer, value: Buffer, flags?: number): void;
  mapDelete(fd: number, key: Buffer): boolean;
  mapNextKey(fd: number, key: Buffer | null, keySize: number): Buffer | null;
  /** A handle on the map: checked once, used through the addon's own duplicate of fd until mapRelease. */
  mapHandle(fd: number): number;
  mapRelease(handle: number): boolean;
  handleLookup(handle: number, key: Buffer, valueSize: number, del?: boolean): Buffer | null;
  handleUpdate(handle: number, key: Buffer, value: Buffer, flags?: number): void;
  handleDelete(handle: number, key: Buffer): boolean;
  handleNextKey(handle: number, key: Buffer | null, keySize: number): Buffer | null;
  numPossibleCpus(): number;
  probe(): NativeProbe;
  /** netnsFd -1 means the caller's netns. */
  socketInNetns(netnsFd: number, spec: NativeSocketSpec): number;
  socketNetnsCookie(fd: number): bigint;
  sockName(fd: number, peer: boolean): SockName;
  connectFd(fd: number, address: string, port: number): boolean;
  originalDstSockopt(fd: number): SockName | null;
  cgroupId(cgroupPath: string): bigint;
  mountBpffs(mountPoint: string): void;
  /** SO_PEERCRED of a connected Unix socket. */
  peerCred(fd: number): { pid: number; uid: number; gid: number };
  /** A connected pair of Unix stream sockets (close-on-exec). */
  socketPair(): [number, number];
  /** A blocking, close-on-exec Unix stream socket connected to `path`. */
  unixConnect(path: string): number;
  /** A nonblocking Unix stream listener bound to `path` (Node never unlinks a path it did not bind). */
  unixListen(path: string, backlog?: number): number;
  /** sendmsg with the fds (SCM_RIGHTS) on the first byte: bytes sent, or -1 if it would block. */
  sendFds(fd: number, data: Buffer, fds?: number[]): number;
  /** Reads exactly `size` bytes (fewer at end of stream) within `timeoutMs`, with the fds that came along. */
  recvFds(fd: number, size: number, timeoutMs: number): { data: Buffer; fds: number[] };
  /** glibc's malloc_trim(0): free pages inside the malloc heaps go back to the system. True if any did. */
  mallocTrim(): boolean;
}

/** Errors thrown by the addon: errno and code always, verifierLog for load failures. */
export interface BpfError extends Error {
  errno: number;
  code: string;
  syscall?: string;
  verifierLog?: string;
}

export function isBpfError(e: unknown): e is BpfError {
  return e instanceof Error && typeof (e as Partial<BpfError>).errno === 'number' && typeof (e as Partial<BpfError>).code === 'string';
}

export const addonPath = path.join(nativeBuildDir, 'weft_native.node');

let loaded: NativeAddon | undefined;

/** The native addon; throws an actionable error if it has not been built. */
export function native(): NativeAddon {
  if (!loaded) {
    try {
      loaded = createRequire(import.meta.url)(addonPath) as NativeAddon;
    } catch (e) {
      throw new Error(`weft native addon not available at ${addonPath}: run make build (${(e as Error).message})`, { cause: e });
    }
  }
  return loaded;
}

/** glibc's malloc_trim(0) (the addon is weft's one native door): true if any memory went back. */
export function mallocTrim(): boolean {
  return native().mallocTrim();
}

/** Path of a compiled BPF object (build/bpf/<name>.bpf.o). */
export function bpfObjectPath(name: string, objDir = path.join(repoRoot, 'build', 'bpf')): string {
  return path.join(objDir, `${name}.bpf.o`);
}
