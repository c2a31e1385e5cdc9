// The enroller's side of the agent's enrollment socket.
import { request } from 'node:http';
import type { PodInfo } from './enrollment.ts';

export function agentCall<T>(socketPath: string, method: 'GET' | 'PUT' | 'DELETE', path: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request({ socketPath, method, path, timeout: timeoutMs, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let s = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (s += d));
      res.on('end', () => {
        let v: { error?: string } = {};
        try {
          v = JSON.parse(s) as { error?: string };
        } catch {}
        if ((res.statusCode ?? 500) >= 400) reject(new Error(`agent: ${v.error ?? `HTTP ${res.statusCode}`}`));
        else resolve(v as T);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`agent at ${socketPath} did not answer within ${timeoutMs / 1000}s`)));
    req.on('error', reject);
    req.end(data);
  });
}

export const enrollPod = (socketPath: string, pod: PodInfo) => agentCall<{ enrolled: boolean }>(socketPath, 'PUT', `/v1/pods/${encodeURIComponent(pod.uid)}`, pod);
export const releasePod = (socketPath: string, uid: string) => agentCall<{ released: boolean }>(socketPath, 'DELETE', `/v1/pods/${encodeURIComponent(uid)}`);
