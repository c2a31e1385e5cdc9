// The agent's enrolled pods (ztunnel's inpod state manager): for each, its capture and the
// listeners the agent runs inside the pod's netns. The list is persisted so a restarted agent
// re-adopts its pods (their pinned capture kept working; only listeners are re-opened).
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { WEFT } from '../../bpf/index.ts';
import type { CaptureBackend, CaptureBackends, PodCaptureHandle } from '../capture/backend.ts';
import type { AgentMetrics } from '../metrics/metrics.ts';
import { podIdentity, type ProxyContext } from '../proxy/context.ts';
import type { Credentials, PodHboneServer } from '../../hbone/index.ts';
import { hboneHandlers } from '../proxy/inbound/hbone.ts';
import { handleInboundPlaintext } from '../proxy/inbound/plaintext.ts';
import { LocalPods } from '../proxy/node-local/local-pods.ts';
import { handleExpressOutbound, handleOutbound } from '../proxy/outbound/handle.ts';
import type { ProxyPod } from '../proxy/types.ts';
import { AGENT_MARK, LOOPBACK, listenInPod, listenInPodNative, noIpv6, podDialSockets, type PodListener } from '../proxy/pod-sockets.ts';
import { canonicalIp } from '../../api/codec.ts';
import { formatSpiffe } from '../../api/spiffe.ts';
import { listenerInNetns } from '../../bpf/index.ts';
import type { PodInfo } from '../../api/enrollment.ts';
import { netnsPid, procStartTime } from './proc.ts';
import type { PodListenerFds } from '../handover/protocol.ts';
import { closeQuietly } from '../../bpf/fd-passing.ts';

/**
 * Why a saved pod must not be re-adopted, or undefined if it may: its netns or cgroup is gone, or
 * its netns names a PID that another process holds now (started at another time).
 */
export function readoptRefusal(info: PodInfo, proc = '/proc'): string | undefined {
  const pid = netnsPid(info.netns, proc);
  if (pid !== undefined) {
    if (!info.pidStartTime) return `netns ${info.netns} was saved without the process start time`;
    const now = procStartTime(pid, proc);
    if (now === undefined) return `process ${pid} is gone`;
    if (now !== info.pidStartTime) return `PID ${pid} now belongs to another process (started at ${now}, not ${info.pidStartTime})`;
  }
  if (!existsSync(info.netns)) return `netns ${info.netns} is gone`;
  if (!existsSync(info.cgroup)) return `cgroup ${info.cgroup} is gone`;
  return undefined;
}

interface EnrolledPod extends ProxyPod {
  sockets: ReturnType<typeof podDialSockets>;
  info: PodInfo;
  servers: PodListener[];
  /** The pod's HBONE server on 15008, once its certificate is there. */
  hbone?: PodHboneServer;
  hboneFd?: number;
  credentials?: Credentials;
  released?: boolean;
  enrolledAt: string;
  /** The pod's listening sockets, for a handover to the agent replacing this one. */
  listenFds: PodListenerFds;
}

/** Enrollment and release are held while the agent hands over: the caller waits and asks again. */
export class PodsFrozen extends Error {
  constructor() {
    super('pods are being handed over to a new agent');
  }
}

/** What else must happen when a pod joins or leaves (on Kubernetes: its redirection annotation). */
export interface PodHooks {
  /** After capture is in place; a failure fails the enrollment request (the pod stays captured). */
  enrolled(info: PodInfo): Promise<void>;
  /** After the pod was released. */
  released(info: PodInfo): Promise<void>;
}

export class PodManager {
  hooks?: PodHooks;
  private readonly pods = new Map<string, EnrolledPod>();
  private readonly stateFile: string;
  /** One operation at a time: enroll and release of the same pod never interleave. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Told the enrolled pods' IPs after every change, before enroll answers: the node's probe rules. */
  onPodIps?: (ips: string[]) => Promise<void>;
  /** Handed over (or stopping): no enrollment or release is taken any more. */
  private retired = false;
  /** Handing over: enrollments and releases throw PodsFrozen until thawed or retired. */
  private frozen = false;

  constructor(
    private readonly backends: CaptureBackends,
    private readonly log: Logger,
    private readonly metrics: AgentMetrics,
    stateDir: string,
    private readonly ctx: ProxyContext,
    /** Enrolled pods by IP, for the node-local fast path: the registry the proxy context reads (ctx.localPods). */
    private readonly byIp = new LocalPods(),
  ) {
    // Certificates rotate under open connections: new HBONE handshakes get the new one.
    ctx.certs?.on('rotated', (id: { namespace: string; serviceAccount: string }, cert: { keyPem: string; certChainPem: string; rootPem: string }) => {
      for (const p of this.pods.values())
        if (p.hbone && p.namespace === id.namespace && p.serviceAccount === id.serviceAccount) {
          p.credentials = { key: cert.keyPem, certChain: cert.certChainPem, root: cert.rootPem };
          p.hbone.updateCredentials();
        }
    });
    mkdirSync(stateDir, { recursive: true });
    this.stateFile = join(stateDir, 'pods.json');
  }

  /** A pod may ask for a capture mode (benchmarks compare both on one node); else the default. */
  private backendFor(info: PodInfo): CaptureBackend {
    const mode = info.capture ?? this.backends.default;
    const b = this.backends[mode];
    if (!b) throw new Error(`pod ${info.namespace}/${info.name}: capture mode ${mode} is not available on this node`);
    return b;
  }

  private async forgetOthers(): Promise<void> {
    const keep = new Set(this.pods.keys());
    for (const b of [this.backends.ebpf, this.backends.iptables]) await b?.forgetExcept(keep);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  list(): { info: PodInfo; enrolledAt: string; counters: { outbound: number; inbound: number } }[] {
    return [...this.pods.values()].map((p) => ({ info: p.info, enrolledAt: p.enrolledAt, counters: safeCounters(p.capture) }));
  }

  counters() {
    return [...this.pods.values()].map((p) => ({ namespace: p.info.namespace, pod: p.info.name, ...safeCounters(p.capture) }));
  }

  /** Dial sockets made ahead of time in the pods' netns and not taken yet, all pods together. */
  dialSocketsReady(): number {
    let n = 0;
    for (const p of this.pods.values()) n += p.sockets.size;
    return n;
  }

  /** Captures a pod and opens its listeners; acknowledged only when both are in place. */
  enroll(info: PodInfo): Promise<void> {
    return this.serial(async () => {
      if (this.frozen) throw new PodsFrozen();
      if (this.retired) throw new Error('this agent has handed its pods over and takes no enrollment');
      const have = this.pods.get(info.uid);
      if (!have || have.info.netns !== info.netns) {
        if (have) await this.releaseNow(info.uid);
        try {
          await this.enrollNow(info);
          this.metrics.enrollments.inc({ operation: 'enroll', result: 'success' });
          this.log.info({ pod: `${info.namespace}/${info.name}`, uid: info.uid, mode: this.backendFor(info).mode }, 'pod enrolled');
        } catch (e) {
          this.metrics.enrollments.inc({ operation: 'enroll', result: 'failure' });
          this.log.error({ pod: `${info.namespace}/${info.name}`, err: (e as Error).message }, 'pod enrollment failed');
          throw e;
        } finally {
          this.persist();
          await this.syncPodIps();
        }
      }
      // Also for a repeated request: the enroller retries when marking the pod failed before.
      await this.hooks?.enrolled(this.pods.get(info.uid)!.info);
    });
  }

  /** A failure only costs the node's probes (captured like any other plaintext): logged. */
  private async syncPodIps(): Promise<void> {
    await this.onPodIps?.(this.byIp.ips()).catch((e: Error) => this.log.error({ err: e.message }, 'cannot update the node probe rules'));
  }

  private async enrollNow(info: PodInfo, inherited: PodListenerFds = {}): Promise<void> {
    // A /proc/<pid>/ns/net path is only as good as the PID: note whose it is before and after
    // opening it, so a process that exited (and a PID reused) in between is caught.
    const pid = netnsPid(info.netns);
    const started = pid === undefined ? undefined : procStartTime(pid);
    if (pid !== undefined && (started === undefined || (info.pidStartTime !== undefined && info.pidStartTime !== started)))
      throw new Error(`pod ${info.namespace}/${info.name}: process ${pid} of netns ${info.netns} is gone or is another process now`);
    let netnsFd: number;
    try {
      netnsFd = openSync(info.netns, 'r');
    } catch (e) {
      throw new Error(`pod ${info.namespace}/${info.name}: cannot open network namespace ${info.netns}: ${(e as Error).message}`, { cause: e });
    }
    if (pid !== undefined) {
      if (procStartTime(pid) !== started) {
        closeSync(netnsFd);
        throw new Error(`pod ${info.namespace}/${info.name}: process ${pid} of netns ${info.netns} exited while it was opened`);
      }
      info = { ...info, pidStartTime: started };
    }
    let capture: PodCaptureHandle | undefined;
    const servers: PodListener[] = [];
    let hboneFd: number | undefined;
    let dials: EnrolledPod['sockets'] | undefined;
    /** Fds now owned by a server or by hboneFd (closed with them). */
    const taken = new Set<number>();
    try {
      capture = await this.backendFor(info).enroll(info);
      const pod: EnrolledPod = {
        uid: info.uid, namespace: info.namespace, name: info.name, serviceAccount: info.serviceAccount, ips: info.ips.map(canonicalIp),
        netnsFd, sockets: podDialSockets(netnsFd), capture, info, servers, enrolledAt: new Date().toISOString(), listenFds: {},
      };
      dials = pod.sockets;
      // One listener per family on 15001 and 15006: capture sends IPv6 connections to [::1]:15001
      // and to the IPv6 slot of 15006; with nothing there they would all be refused.
      for (const family of [4, 6] as const) {
        try {
          // The native data path accepts on the relay thread: no Node socket per captured connection.
          const out = this.ctx.nativeAccept
            ? listenInPodNative(netnsFd, LOOPBACK[family], WEFT.PORT_OUTBOUND, (c) => void handleOutbound(this.ctx, pod, c), inherited[`outbound${family}`], (code) =>
                this.log.warn({ pod: `${info.namespace}/${info.name}`, err: code }, 'outbound listener: accept failed; it pauses 100 ms and goes on'),
              (x) => handleExpressOutbound(this.ctx, pod, x))
            : await listenInPod(netnsFd, LOOPBACK[family], WEFT.PORT_OUTBOUND, (s) => void handleOutbound(this.ctx, pod, s), inherited[`outbound${family}`]);
          servers.push(out.server);
          taken.add(out.fd);
          pod.listenFds[`outbound${family}`] = out.fd;
          const inb = await listenInPod(netnsFd, this.backendFor(info).inboundBindAddress[family], WEFT.PORT_INBOUND, (s) => void handleInboundPlaintext(this.ctx, pod, s), inherited[`inbound${family}`]);
          servers.push(inb.server);
          taken.add(inb.fd);
          pod.listenFds[`inbound${family}`] = inb.fd;
          capture.setInboundListener(inb.fd, family); // the same socket when inherited: the map entry stays as it was
        } catch (e) {
          if (family === 4 || !noIpv6(e)) throw e;
          this.log.warn({ pod: `${info.namespace}/${info.name}`, err: (e as Error).message }, 'no IPv6 in the pod network namespace; IPv4 listeners only');
        }
      }
      if (this.ctx.certs) {
        // Listening now means HBONE peers queue in the backlog instead of being refused while
        // the pod's certificate is fetched; the TLS server takes the socket over once it is here.
        // One dual-stack socket serves both families (IPv4 peers show as ::ffff:a.b.c.d, which
        // the HBONE servers unmap), unless the pod has no IPv6.
        if (inherited.hbone !== undefined) hboneFd = inherited.hbone;
        else
          try {
            hboneFd = listenerInNetns(netnsFd, '::', WEFT.PORT_HBONE, { mark: AGENT_MARK, v6Only: false });
          } catch (e) {
            if (!noIpv6(e)) throw e;
            hboneFd = listenerInNetns(netnsFd, '0.0.0.0', WEFT.PORT_HBONE, { mark: AGENT_MARK });
          }
        taken.add(hboneFd);
        pod.hboneFd = hboneFd;
        pod.listenFds.hbone = hboneFd;
        void this.startHbone(pod);
      }
      this.pods.set(info.uid, pod);
      this.byIp.add(pod);
      this.metrics.enrolledPods.set(this.pods.size);
    } catch (e) {
      for (const s of servers) s.close();
      if (hboneFd !== undefined) closeSync(hboneFd);
      // Inherited sockets never put to use: this agent's copies (the old agent keeps its own).
      for (const fd of Object.values(inherited)) if (fd !== undefined && !taken.has(fd)) closeQuietly(fd);
      dials?.close();
      await capture?.release().catch(() => undefined);
      closeSync(netnsFd);
      throw e;
    }
  }

  /** Fetches the pod's certificate (retrying while the pod stays enrolled), then serves HBONE. */
  private async startHbone(pod: EnrolledPod): Promise<void> {
    const id = podIdentity(this.ctx, pod);
    for (let attempt = 0; !pod.released; attempt++) {
      try {
        const cert = await this.ctx.certs!.get(id);
        if (pod.released) return;
        pod.credentials = { key: cert.keyPem, certChain: cert.certChainPem, root: cert.rootPem };
        pod.hbone = this.ctx.serveHbone({ credentials: () => pod.credentials!, trustDomain: this.ctx.trustDomain, ...hboneHandlers(this.ctx, pod) });
        await pod.hbone.listen({ fd: pod.hboneFd! });
        pod.hboneFd = undefined; // owned by the server now
        this.log.info({ pod: `${pod.namespace}/${pod.name}`, identity: formatSpiffe(id) }, 'hbone ready');
        return;
      } catch (e) {
        this.log.warn({ pod: `${pod.namespace}/${pod.name}`, err: (e as Error).message, attempt }, 'no certificate yet for the pod; HBONE waits');
        await this.certificateOrTimeout(id, Math.min(500 * 2 ** attempt, 10_000));
      }
    }
  }

  /**
   * Resolves when the identity's certificate arrives or after `ms`, whichever is first: the
   * backoff bounds how often a failing fetch is retried, but a certificate that arrived must
   * not leave peers queued in the backlog for the rest of a 10 s sleep.
   */
  private certificateOrTimeout(id: ReturnType<typeof podIdentity>, ms: number): Promise<void> {
    const certs = this.ctx.certs!;
    const want = formatSpiffe(id);
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        certs.off('issued', arrived);
        certs.off('rotated', arrived);
        resolve();
      };
      const arrived = (got: Parameters<typeof formatSpiffe>[0]) => {
        if (formatSpiffe(got) === want) done();
      };
      const timer = setTimeout(done, ms);
      certs.on('issued', arrived);
      certs.on('rotated', arrived);
    });
  }

  release(uid: string): Promise<boolean> {
    return this.serial(async () => {
      if (this.frozen) throw new PodsFrozen();
      if (this.retired) throw new Error('this agent has handed its pods over and takes no release');
      const info = this.pods.get(uid)?.info;
      let ok: boolean;
      try {
        ok = await this.releaseNow(uid);
        this.persist();
      } finally {
        await this.syncPodIps();
      }
      if (ok && info) await this.hooks?.released(info);
      return ok;
    });
  }

  private async releaseNow(uid: string): Promise<boolean> {
    const pod = this.pods.get(uid);
    if (!pod) {
      await this.forgetOthers(); // pins of a pod this process never saw
      return false;
    }
    this.pods.delete(uid);
    this.byIp.remove(pod);
    // The last pod with this identity left the node: its certificate is no longer renewed.
    if (![...this.pods.values()].some((p) => p.namespace === pod.namespace && p.serviceAccount === pod.serviceAccount)) this.ctx.certs?.forget(podIdentity(this.ctx, pod));
    this.metrics.enrolledPods.set(this.pods.size);
    // Stop accepting; connections already relayed run to completion on their own sockets.
    pod.released = true;
    for (const s of pod.servers) s.close();
    if (pod.hbone) void pod.hbone.drain();
    if (pod.hboneFd !== undefined) closeSync(pod.hboneFd);
    try {
      await pod.capture.release();
      this.metrics.enrollments.inc({ operation: 'release', result: 'success' });
    } catch (e) {
      this.metrics.enrollments.inc({ operation: 'release', result: 'failure' });
      this.log.error({ pod: `${pod.namespace}/${pod.name}`, err: (e as Error).message }, 'pod release failed');
      throw e;
    } finally {
      pod.sockets.close();
      closeSync(pod.netnsFd);
    }
    this.log.info({ pod: `${pod.namespace}/${pod.name}`, uid }, 'pod released');
    return true;
  }

  /**
   * After a restart: re-adopt persisted pods whose netns still exists, forget the rest. In an
   * upgrade, `handedOver` lists the running agent's pods with their listening sockets instead.
   */
  adopt(handedOver?: { info: PodInfo; fds: PodListenerFds }[]): Promise<void> {
    return this.serial(async () => {
      let saved: { info: PodInfo; fds?: PodListenerFds }[] = handedOver ?? [];
      if (!handedOver)
        try {
          saved = (JSON.parse(readFileSync(this.stateFile, 'utf8')) as PodInfo[]).map((info) => ({ info }));
        } catch {}
      for (const { info, fds } of saved) {
        const refusal = readoptRefusal(info);
        if (refusal) {
          Object.values(fds ?? {}).forEach(closeQuietly);
          this.log.warn({ pod: `${info.namespace}/${info.name}`, reason: refusal }, 'saved pod not re-adopted');
          continue;
        }
        try {
          await this.enrollNow(info, fds);
          this.metrics.enrollments.inc({ operation: 'adopt', result: 'success' });
          this.log.info({ pod: `${info.namespace}/${info.name}` }, 'pod re-adopted');
        } catch (e) {
          this.metrics.enrollments.inc({ operation: 'adopt', result: 'failure' });
          this.log.error({ pod: `${info.namespace}/${info.name}`, err: (e as Error).message }, 'pod re-adoption failed');
        }
      }
      await this.forgetOthers();
      this.persist();
      await this.syncPodIps();
    });
  }

  private persist(): void {
    const tmp = `${this.stateFile}.tmp`;
    writeFileSync(tmp, JSON.stringify([...this.pods.values()].map((p) => p.info), null, 1));
    renameSync(tmp, this.stateFile);
  }

  /** From now on enroll and release throw PodsFrozen (before listeners(): a handover). */
  freeze(): void {
    this.frozen = true;
  }

  thaw(): void {
    this.frozen = false;
  }

  /** Every pod's listening sockets, once no enrollment or release is under way (a handover). */
  listeners(): Promise<{ info: PodInfo; fds: PodListenerFds }[]> {
    return this.serial(async () => [...this.pods.values()].map((p) => ({ info: p.info, fds: { ...p.listenFds } })));
  }

  /** True when a pod's listeners are all open (its HBONE server too, once it has a certificate). */
  serving(): boolean {
    return [...this.pods.values()].every((p) => !this.ctx.certs || p.hbone !== undefined);
  }

  /**
   * Handed over, or stopping: no more enrollments; every listener stops accepting (after a handover
   * the sockets stay open in the new agent), and HBONE sessions get GOAWAY so open streams finish.
   * Capture, dial sockets and the node-local registry stay until close(): established connections
   * still use them. Resolves when every HBONE server has drained.
   */
  retire(deadlineMs: number): Promise<void> {
    this.retired = true;
    const drains: Promise<void>[] = [];
    for (const p of this.pods.values()) {
      p.released = true; // a certificate that arrives now starts no HBONE server
      for (const s of p.servers) s.close();
      if (p.hbone) drains.push(p.hbone.drain(deadlineMs));
      if (p.hboneFd !== undefined) closeSync(p.hboneFd);
      p.hboneFd = undefined;
    }
    return Promise.all(drains).then(() => undefined);
  }

  /** Agent shutdown: close listeners and handles; capture stays pinned (new connections fail). */
  close(): void {
    this.retired = true;
    this.byIp.clear();
    for (const p of this.pods.values()) {
      p.released = true;
      for (const s of p.servers) s.close();
      p.hbone?.close();
      if (p.hboneFd !== undefined) closeSync(p.hboneFd);
      p.capture.close();
      p.sockets.close();
      closeSync(p.netnsFd);
    }
    this.pods.clear();
  }
}

function safeCounters(c: PodCaptureHandle) {
  try {
    return c.counters();
  } catch {
    return { outbound: 0, inbound: 0 };
  }
}
