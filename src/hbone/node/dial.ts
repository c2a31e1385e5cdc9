// A `dial` decision (server/contract.ts) done in JavaScript: the unconnected socket the caller handed
// over, wrapped in a net.Socket and connected. The Node transport does this for every dial; the
// agent's own dials (pod-sockets.ts) too. (The native relay connects the fd on its own thread.)
import { closeSync } from 'node:fs';
import { Socket } from 'node:net';
import { DIAL_TIMEOUT_MS } from '../settings.ts';

/**
 * Connects `fd` (ours from here on: destroyed on failure) to `dst`; resolves once connected, rejects
 * with the socket error: code ETIMEDOUT after `timeoutMs`, ECONNABORTED when `signal` aborts (the
 * requester is gone: the attempt ends now, not at the timeout).
 */
export function connectFd(fd: number, dst: { address: string; port: number }, timeoutMs = DIAL_TIMEOUT_MS, signal?: AbortSignal): Promise<Socket> {
  let s: Socket;
  try {
    s = new Socket({ fd, allowHalfOpen: true, readable: true, writable: true });
  } catch (e) {
    try {
      closeSync(fd);
    } catch {} // not a descriptor at all
    return Promise.reject(e as Error);
  }
  s.setNoDelay(true);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => s.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), timeoutMs);
    const onAbort = () => s.destroy(Object.assign(new Error('connect aborted'), { code: 'ECONNABORTED' }));
    s.once('connect', () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', onAbort);
      s.off('error', onErr);
      resolve(s);
    });
    const onErr = (e: Error) => {
      clearTimeout(t);
      signal?.removeEventListener('abort', onAbort);
      reject(e);
    };
    s.once('error', onErr);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    s.connect(dst.port, dst.address);
  });
}

/** The code a failed connect reports in dialFailure(): the errno name, else the message. */
export const dialErrorCode = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e as Error).message;
