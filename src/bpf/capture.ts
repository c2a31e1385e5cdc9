// Per-pod traffic capture, the way the node agent uses it:
//
//   const capture = NodeCapture.open();                 // load programs, open/pin node-wide maps
//   const pod = capture.enroll({ id, cgroupPath, netns }); // attach to the pod's cgroup + netns
//   pod.setInboundListener(fd15006);                    // inbound plaintext listener in the pod
//   capture.originalDst({ netnsCookie, peer })          // for each connection accepted on 15001
//   pod.release();                                      // pod gone: links, entries, pins removed
//
// Everything lives under <bpffs>/weft (pinRoot): maps/ holds the node-wide maps shared by every
// cgroup program; pods/<id>/ holds the pod's pinned links and its own sk_lookup maps. Pins keep
// capture working while the agent restarts; NodeCapture.open() + enroll() adopt what is pinned.
import fs from 'node:fs';
import path from 'node:path';
import { bpfObjectPath, isBpfError, native, type LoadedProgram } from './addon.ts';
import { WEFT } from './consts.ts';
import { BpfMap, exclKey, origDst, peerKey, u32, u64, unmapV4, type Endpoint, type ExclKey, type OriginalDst, type PeerKey } from './maps.ts';
import { cgroupId, cgroupSubtree, ensureBpffs } from './mounts.ts';
import { netnsCookie, sockName, socketNetnsCookie, withNetnsFd, type NetnsRef } from './netns.ts';

/** Objects attached to a pod's cgroup; one program each, sharing the node-wide maps. */
const CGROUP_OBJECTS = ['connect4', 'connect6', 'sockops', 'getpeername4', 'getpeername6'] as const;
/** Loaded once per pod (sk_lookup cannot tell pods apart; see bpf/sk_lookup.bpf.c). */
const SK_LOOKUP = 'sk_lookup';
const LINK_NAMES = [...CGROUP_OBJECTS, SK_LOOKUP];

export interface CaptureOptions {
  /** bpffs directory for all weft pins; default <bpffs>/weft. */
  pinRoot?: string;
  /** Directory with the compiled *.bpf.o; default build/bpf. */
  objDir?: string;
}

export interface PodSpec {
  /** Stable pod identifier (e.g. the pod UID); names the pin directory. */
  id: string;
  /** The pod's cgroup v2 directory (under the cgroup2 mount). */
  cgroupPath: string;
  /** The pod's network namespace: path or open fd. */
  netns: NetnsRef;
}

const ignorable = (e: unknown) => isBpfError(e) && ['ENOENT', 'ENOLINK'].includes(e.code);

function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    fs.closeSync(fd);
  } catch {}
}

function loadSingleProgram(file: string, pinRoot: string): LoadedProgram {
  const obj = native().loadObject(file, { pinRoot });
  for (const m of Object.values(obj.maps)) closeQuietly(m.fd); // pinned; opened by path when needed
  const progs = Object.values(obj.programs);
  const prog = progs[0];
  if (!prog || progs.length !== 1) {
    progs.forEach((p) => closeQuietly(p.fd));
    throw new Error(`${file}: expected exactly one program, found ${progs.length}`);
  }
  return prog;
}

/** Node-wide capture state: the loaded cgroup programs and the shared maps. */
export class NodeCapture {
  private constructor(
    readonly pinRoot: string,
    private readonly objDir: string | undefined,
    private readonly progs: Map<string, LoadedProgram>,
    /** (pod netns cookie, client ip:port) -> original destination; LRU, entries are taken on read. */
    readonly origDstMap: BpfMap<PeerKey, OriginalDst>,
    /** (netns cookie or 0n for all pods, port) -> 1: destinations never captured outbound. */
    readonly outExclMap: BpfMap<ExclKey, number>,
    /** cgroup id -> outbound connections captured. */
    readonly outCountMap: BpfMap<bigint, bigint>,
  ) {}

  /** Loads the cgroup programs, creating or re-using (after a restart) the pinned node-wide maps. */
  static open(opts: CaptureOptions = {}): NodeCapture {
    const pinRoot = opts.pinRoot ?? path.join(ensureBpffs(), 'weft');
    if (opts.pinRoot) ensureBpffs();
    const mapDir = path.join(pinRoot, 'maps');
    fs.mkdirSync(mapDir, { recursive: true });
    fs.mkdirSync(path.join(pinRoot, 'pods'), { recursive: true });
    const progs = new Map<string, LoadedProgram>();
    const maps: BpfMap<never, never>[] = [];
    try {
      for (const name of CGROUP_OBJECTS) progs.set(name, loadSingleProgram(bpfObjectPath(name, opts.objDir), mapDir));
      const open = <K, V>(name: string, k: BpfMap<K, V>['key'], v: BpfMap<K, V>['value']) => {
        const m = BpfMap.open(path.join(mapDir, name), k, v);
        maps.push(m as unknown as BpfMap<never, never>);
        return m;
      };
      return new NodeCapture(
        pinRoot,
        opts.objDir,
        progs,
        open(WEFT.MAP_ORIG_DST, peerKey, origDst),
        open(WEFT.MAP_OUT_EXCL, exclKey, u32),
        open(WEFT.MAP_OUT_COUNT, u64, u64),
      );
    } catch (e) {
      progs.forEach((p) => closeQuietly(p.fd));
      maps.forEach((m) => m.close());
      throw e;
    }
  }

  /**
   * Starts capturing a pod: links the cgroup programs to its cgroup and a fresh sk_lookup
   * instance to its netns, all pinned. If the pod is already pinned (agent restart), adopts it.
   */
  enroll(spec: PodSpec): PodCapture {
    if (this.progs.size === 0) throw new Error('NodeCapture is closed');
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(spec.id)) throw new Error(`invalid pod id '${spec.id}' (letters, digits, . _ -)`);
    const dir = this.podDir(spec.id);
    if (fs.existsSync(dir)) {
      try {
        return PodCapture.adopt(this, spec, dir);
      } catch {
        this.forget(spec.id); // half-enrolled (crash mid-enroll): start over
      }
    }
    const cookie = netnsCookie(spec.netns);
    const cgid = cgroupId(spec.cgroupPath);
    fs.mkdirSync(dir);
    const pod = new PodCapture(this, spec, dir, cookie, cgid);
    try {
      const cg = fs.openSync(spec.cgroupPath, 'r');
      try {
        for (const name of CGROUP_OBJECTS) {
          const prog = this.progs.get(name)!;
          pod.addLink(name, native().linkCreate(prog.fd, cg, prog.attachType));
        }
      } finally {
        fs.closeSync(cg);
      }
      const prog = loadSingleProgram(bpfObjectPath(SK_LOOKUP, this.objDir), dir);
      try {
        pod.openInboundMaps();
        withNetnsFd(spec.netns, (ns) => pod.addLink(SK_LOOKUP, native().linkCreate(prog.fd, ns, prog.attachType)));
      } finally {
        fs.closeSync(prog.fd); // the link holds the program
      }
      return pod;
    } catch (e) {
      try {
        pod.release();
      } catch {}
      throw e;
    }
  }

  /** Ids of pods with pins (enrolled by this or an earlier agent process). */
  podIds(): string[] {
    const dir = path.join(this.pinRoot, 'pods');
    return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  }

  /**
   * Releases a pod known only from its pins (e.g. it vanished while the agent was down): detaches
   * its links, drops its counters, removes its pins. Prefer PodCapture.release() when you have it.
   */
  forget(id: string): void {
    const dir = this.podDir(id);
    if (!fs.existsSync(dir)) return;
    for (const name of LINK_NAMES) {
      let fd: number | undefined;
      try {
        fd = native().objGet(path.join(dir, `link_${name}`));
        const info = native().linkInfo(fd);
        if (info.cgroupId !== undefined) this.outCountMap.delete(info.cgroupId);
        native().linkDetach(fd);
      } catch (e) {
        if (!ignorable(e)) throw e;
      } finally {
        closeQuietly(fd);
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }

  /**
   * The original destination of a connection accepted on the outbound listener (15001), taken
   * (deleted) from the map. Pass the accepted socket's fd, or the listener's netns cookie and the
   * accepted socket's remote address (socket.remoteAddress/remotePort). undefined: not captured.
   */
  originalDst(conn: number | { netnsCookie: bigint; peer: Endpoint }): OriginalDst | undefined {
    const k = typeof conn === 'number' ? { netnsCookie: socketNetnsCookie(conn), peer: sockName(conn, true) } : conn;
    return this.origDstMap.take({ netnsCookie: k.netnsCookie, client: { address: unmapV4(k.peer.address), port: k.peer.port } });
  }

  /** Never capture outbound connections to `port` (from one pod's netns, or from all with 0n). */
  excludeOutboundPort(port: number, netnsCookie = 0n): void {
    this.outExclMap.set({ netnsCookie, port }, 1);
  }

  includeOutboundPort(port: number, netnsCookie = 0n): void {
    this.outExclMap.delete({ netnsCookie, port });
  }

  /** Outbound connections captured from tasks in exactly this cgroup. */
  outboundCount(cgroup: bigint): bigint {
    return this.outCountMap.get(cgroup) ?? 0n;
  }

  /** Closes this process's fds. Pins, links and therefore capture stay in place. */
  close(): void {
    this.progs.forEach((p) => closeQuietly(p.fd));
    this.progs.clear();
    [this.origDstMap, this.outExclMap, this.outCountMap].forEach((m) => m.close());
  }

  /** Removes weft from the node: forgets every pod, then deletes pinRoot (maps included). */
  uninstall(): void {
    for (const id of this.podIds()) this.forget(id);
    this.close();
    fs.rmSync(this.pinRoot, { recursive: true, force: true });
  }

  private podDir(id: string): string {
    return path.join(this.pinRoot, 'pods', id);
  }
}

/** One enrolled pod: its links, its sk_lookup maps, its counters. */
export class PodCapture {
  private readonly links = new Map<string, number>();
  private inSocks?: BpfMap<number, bigint>;
  private inExcl?: BpfMap<number, number>;
  private inCount?: BpfMap<number, bigint>;

  /** @internal use NodeCapture.enroll */
  constructor(
    private readonly capture: NodeCapture,
    readonly spec: PodSpec,
    readonly pinDir: string,
    /** The pod netns cookie (key of per-pod exclusions and of original-destination entries). */
    readonly netnsCookie: bigint,
    readonly cgroupId: bigint,
  ) {}

  /** @internal re-opens a pinned pod after an agent restart. */
  static adopt(capture: NodeCapture, spec: PodSpec, dir: string): PodCapture {
    const pod = new PodCapture(capture, spec, dir, netnsCookie(spec.netns), cgroupId(spec.cgroupPath));
    try {
      for (const name of LINK_NAMES) pod.links.set(name, native().objGet(path.join(dir, `link_${name}`)));
      pod.openInboundMaps();
      return pod;
    } catch (e) {
      pod.close();
      throw e;
    }
  }

  /** @internal */
  addLink(name: string, fd: number): void {
    this.links.set(name, fd);
    native().objPin(fd, path.join(this.pinDir, `link_${name}`));
  }

  /** @internal */
  openInboundMaps(): void {
    this.inSocks = BpfMap.open(path.join(this.pinDir, WEFT.MAP_IN_SOCKS), u32, u64);
    this.inExcl = BpfMap.open(path.join(this.pinDir, WEFT.MAP_IN_EXCL), u32, u32);
    this.inCount = BpfMap.open(path.join(this.pinDir, WEFT.MAP_IN_COUNT), u32, u64);
  }

  private maps() {
    if (!this.inSocks || !this.inExcl || !this.inCount) throw new Error(`pod ${this.spec.id} is closed`);
    return { socks: this.inSocks, excl: this.inExcl, count: this.inCount };
  }

  /**
   * Sets the listening socket (the agent's 15006, created in the pod netns) that receives inbound
   * connections of one address family. Until set, inbound connections are refused (fail closed).
   * The kernel drops the entry when that socket closes.
   */
  setInboundListener(fd: number, family: 4 | 6 = 4): void {
    this.maps().socks.set(family === 6 ? WEFT.IN_SLOT_V6 : WEFT.IN_SLOT_V4, BigInt(fd));
  }

  /** Let inbound connections to `port` reach the pod directly (not via the agent). */
  excludeInboundPort(port: number): void {
    this.maps().excl.set(port, 1);
  }

  includeInboundPort(port: number): void {
    this.maps().excl.delete(port);
  }

  /** Never capture this pod's outbound connections to `port`. */
  excludeOutboundPort(port: number): void {
    this.capture.excludeOutboundPort(port, this.netnsCookie);
  }

  /** Inbound connections steered to the agent. */
  inboundCount(): bigint {
    return this.maps().count.get(0) ?? 0n;
  }

  /** Outbound connections captured from the pod's cgroup and its sub-cgroups (containers). */
  outboundCount(): bigint {
    let sum = 0n;
    for (const dir of cgroupSubtree(this.spec.cgroupPath)) sum += this.capture.outboundCount(cgroupId(dir));
    return sum;
  }

  /** Link ids (as bpftool shows them) by program name. */
  linkIds(): Record<string, number> {
    return Object.fromEntries([...this.links].map(([n, fd]) => [n, native().linkInfo(fd).id]));
  }

  /** Stops capturing: detaches every link, deletes the pod's map entries and pins, closes fds. */
  release(): void {
    let first: unknown;
    for (const fd of this.links.values()) {
      try {
        native().linkDetach(fd);
      } catch (e) {
        if (!ignorable(e)) first ??= e;
      }
    }
    try {
      const ids = new Set([this.cgroupId, ...cgroupSubtree(this.spec.cgroupPath).map((d) => cgroupId(d))]);
      ids.forEach((id) => this.capture.outCountMap.delete(id));
      const excl = [...this.capture.outExclMap.keys()].filter((k) => k.netnsCookie === this.netnsCookie);
      excl.forEach((k) => this.capture.outExclMap.delete(k));
    } catch (e) {
      first ??= e;
    }
    this.close();
    fs.rmSync(this.pinDir, { recursive: true, force: true });
    if (first) throw first;
  }

  /** Closes this process's fds; the pod stays captured through its pins. */
  close(): void {
    this.links.forEach((fd) => closeQuietly(fd));
    this.links.clear();
    [this.inSocks, this.inExcl, this.inCount].forEach((m) => m?.close());
    this.inSocks = this.inExcl = this.inCount = undefined;
  }
}
