// Sockets the agent opens inside a pod's network namespace (the in-pod model): listeners on the
// capture ports, and upstream dials that leave from the pod's own addresses. Dials carry the agent
// mark so no capture rule in the pod ever takes them back to the agent.
import { Socket, createServer, type Server } from 'node:net';
import { WEFT, listenerInNetns, socketInNetns } from '../../bpf/index.ts';
import type { Endpoint } from '../capture/backend.ts';

export const AGENT_MARK = WEFT.AGENT_MARK;

/** A listening server in the pod netns; the handler gets paused sockets and their fds. */
export function listenInPod(netnsFd: number, address: string, port: number, onConn: (s: Socket) => void): Promise<{ server: Server; fd: number }> {
  const fd = listenerInNetns(netnsFd, address, port, { mark: AGENT_MARK });
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, onConn);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => {
      server.off('error', reject);
      resolve({ server, fd });
    });
  });
}

/** Connects from inside the pod netns; resolves once connected, rejects with the socket error. */
export function dialFromPod(netnsFd: number, dst: Endpoint, timeoutMs = 10_000): Promise<Socket> {
  const family = dst.address.includes(':') ? 6 : 4;
  const fd = socketInNetns(netnsFd, { family, mark: AGENT_MARK, nonblock: true });
  const s = new Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
  s.setNoDelay(true);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => s.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.off('error', onErr);
      resolve(s);
    });
    const onErr = (e: Error) => {
      clearTimeout(t);
      reject(e);
    };
    s.once('error', onErr);
    s.connect(dst.port, dst.address);
  });
}
