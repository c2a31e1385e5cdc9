// The new agent's end of the handover (protocol.ts): at start, before opening any listener, ask
// the running agent (if any) for its sockets. Blocking reads: nothing else is served yet.
import type { Logger } from 'pino';
import { FdChannel, closeQuietly } from '../../bpf/fd-passing.ts';
import { validatePodInfo, type PodInfo } from '../../api/enrollment.ts';
import {
  HANDOVER_VERSION, NODE_LISTENER_ROLES, POD_LISTENER_ROLES, pairRoles, type NewToOld, type NodeListenerFds, type OldToNew, type PodListenerFds,
} from './protocol.ts';

export interface Inherited {
  /** The old agent's pid. */
  from: number;
  pods: { info: PodInfo; fds: PodListenerFds }[];
  node: NodeListenerFds;
  /** Tells the old agent the new one serves (it stops accepting and drains), or that it gave up. */
  ready(): void;
  abort(reason: string): void;
  /** Fds not taken into use: closed (the old agent still has its own). */
  closeUnused(used: Set<number>): void;
}

/** The sockets of the agent running on this node, or undefined when none answers on `path`. */
export function takeOver(path: string, log: Logger, timeoutMs = 30_000): Inherited | undefined {
  const ch = FdChannel.connect(path);
  if (!ch) return undefined;
  const all: number[] = [];
  try {
    ch.send({ type: 'take', version: HANDOVER_VERSION, pid: process.pid } satisfies NewToOld);
    const next = () => {
      const m = ch.receive<OldToNew>(timeoutMs);
      all.push(...m.fds);
      return m;
    };
    const begin = next().body;
    if (begin.type === 'refused') throw new Error(`the running agent refused the handover: ${begin.reason}`);
    if (begin.type !== 'begin' || begin.version !== HANDOVER_VERSION) throw new Error(`handover: expected begin version ${HANDOVER_VERSION}, got ${JSON.stringify(begin).slice(0, 200)}`);
    const pods: Inherited['pods'] = [];
    let node: NodeListenerFds = {};
    for (;;) {
      const m = next();
      const b = m.body;
      if (b.type === 'end') break;
      if (b.type === 'pod') {
        const info = validatePodInfo(b.info);
        pods.push({ info: { ...info, ...(typeof b.info.pidStartTime === 'string' ? { pidStartTime: b.info.pidStartTime } : {}) }, fds: pairRoles(b.roles, m.fds, POD_LISTENER_ROLES, `pod ${info.namespace}/${info.name}`) });
      } else if (b.type === 'node') node = pairRoles(b.roles, m.fds, NODE_LISTENER_ROLES, 'node');
      else throw new Error(`handover: unexpected message ${b.type}`);
    }
    if (pods.length !== begin.pods) throw new Error(`handover: ${begin.pods} pods announced, ${pods.length} came`);
    log.info({ oldAgentPid: begin.pid, pods: pods.length, sockets: all.length }, 'took over the listening sockets of the running agent');
    let answered = false;
    const answer = (m: NewToOld) => {
      if (answered) return;
      answered = true;
      try {
        ch.send(m);
      } catch {}
      ch.close();
    };
    return {
      from: begin.pid,
      pods,
      node,
      ready: () => answer({ type: 'ready' }),
      abort: (reason) => answer({ type: 'abort', reason }),
      closeUnused: (used) => all.filter((fd) => !used.has(fd)).forEach(closeQuietly),
    };
  } catch (e) {
    all.forEach(closeQuietly);
    ch.close();
    throw e;
  }
}
