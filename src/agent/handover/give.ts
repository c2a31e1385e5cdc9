// The running agent's end of the handover (protocol.ts): answers one replacement at a time.
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { native } from '../../bpf/addon.ts';
import { sendMessage, socketFd } from '../../bpf/fd-passing.ts';
import type { PodInfo } from '../../api/enrollment.ts';
import { HANDOVER_VERSION, splitRoles, type NewToOld, type NodeListenerFds, type OldToNew, type PodListenerFds } from './protocol.ts';

/** What the agent does at each step; the handover only carries messages and fds. */
export interface Giver {
  /** Stops changes to the pods (enrollments wait) and lists every listening socket. */
  prepare(): Promise<{ pods: { info: PodInfo; fds: PodListenerFds }[]; node: NodeListenerFds }>;
  /** The new agent serves on them: stop accepting, drain, exit when done. */
  handedOver(by: number): void;
  /** The new agent failed or went away before it served: carry on. */
  resume(reason: string): void;
}

/** How long a new agent may take from the sockets to `ready` (it waits for mesh state and certificates). */
export const READY_TIMEOUT_MS = 120_000;

export function serveHandover(path: string, giver: Giver, log: Logger): Promise<Server> {
  let busy = false;
  let done = false;
  const server = createServer((sock) => {
    const peer = peerOf(sock);
    if (peer.uid !== 0) {
      log.warn({ peer }, 'handover socket: connection from a non-root process refused');
      return void sock.destroy();
    }
    if (busy || done) {
      void reply(sock, { type: 'refused', reason: done ? 'this agent has handed over already' : 'another handover is under way' }).finally(() => sock.end());
      return;
    }
    busy = true;
    void run(sock, peer.pid).then(
      (ok) => {
        busy = false;
        done ||= ok;
        if (ok) server.close();
      },
      (e: Error) => {
        busy = false;
        log.error({ err: e.message }, 'handover failed; this agent carries on');
      },
    );
  });

  async function run(sock: Socket, pid: number): Promise<boolean> {
    const fd = socketFd(sock);
    const msgs = reader(sock);
    const first = await msgs.next(10_000);
    if (first?.type !== 'take' || first.version !== HANDOVER_VERSION) {
      await reply(sock, { type: 'refused', reason: `expected take version ${HANDOVER_VERSION}` });
      sock.destroy();
      return false;
    }
    log.info({ newAgentPid: pid }, 'a new agent takes over: handing over the listening sockets');
    try {
      // Inside the try: a failed prepare must thaw what it froze, or enrollments would wait forever.
      const { pods, node } = await giver.prepare();
      await sendMessage(fd, { type: 'begin', version: HANDOVER_VERSION, pid: process.pid, pods: pods.length } satisfies OldToNew);
      for (const p of pods) {
        const { roles, fds } = splitRoles(p.fds);
        await sendMessage(fd, { type: 'pod', info: p.info, roles } satisfies OldToNew, fds);
      }
      const n = splitRoles(node);
      await sendMessage(fd, { type: 'node', roles: n.roles } satisfies OldToNew, n.fds);
      await sendMessage(fd, { type: 'end' } satisfies OldToNew);
      const answer = await msgs.next(READY_TIMEOUT_MS);
      if (answer?.type !== 'ready') throw new Error(answer?.type === 'abort' ? `new agent aborted: ${answer.reason}` : 'new agent went away before it was ready');
    } catch (e) {
      sock.destroy();
      giver.resume((e as Error).message);
      log.warn({ err: (e as Error).message }, 'handover not completed; this agent carries on serving');
      return false;
    }
    sock.end();
    giver.handedOver(pid);
    return true;
  }

  // Bound here, not by Node (which unlinks the path on close: the next agent's socket by then).
  rmSync(path, { force: true });
  const fd = native().unixListen(path);
  chmodSync(path, 0o600);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** Newline-free framed JSON from the new agent (4-byte length, as fd-passing frames it). */
function reader(sock: Socket) {
  let buf = Buffer.alloc(0);
  const queue: NewToOld[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  sock.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0);
      if (len > 1 << 16) return void sock.destroy(new Error('handover message too large'));
      if (buf.length < 4 + len) break;
      try {
        queue.push(JSON.parse(buf.subarray(4, 4 + len).toString('utf8')) as NewToOld);
      } catch {
        return void sock.destroy(new Error('handover message is not JSON'));
      }
      buf = buf.subarray(4 + len);
    }
    wake?.();
  });
  const end = () => {
    ended = true;
    wake?.();
  };
  sock.on('close', end);
  sock.on('error', end);
  return {
    async next(timeoutMs: number): Promise<NewToOld | undefined> {
      const deadline = Date.now() + timeoutMs;
      while (queue.length === 0 && !ended && Date.now() < deadline) {
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.max(1, deadline - Date.now()));
          wake = () => {
            clearTimeout(t);
            r();
          };
        });
        wake = undefined;
      }
      return queue.shift();
    },
  };
}

function reply(sock: Socket, m: OldToNew): Promise<void> {
  try {
    return sendMessage(socketFd(sock), m);
  } catch {
    return Promise.resolve();
  }
}

function peerOf(sock: Socket): { pid: number; uid: number } {
  try {
    return native().peerCred(socketFd(sock));
  } catch {
    return { pid: -1, uid: -1 };
  }
}
