// The CLI's side of the lab daemon's Unix-socket API.
import { request } from 'node:http';
import type { LabLayout } from './layout.ts';

export class LabNotRunning extends Error {}

export function labCall<T>(layout: LabLayout, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      { socketPath: layout.socketPath, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}, timeout: timeoutMs },
      (res) => {
        let s = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (s += d));
        res.on('end', () => {
          let v: unknown;
          try {
            v = JSON.parse(s);
          } catch {
            return reject(new Error(`lab ${layout.name}: bad reply: ${s.slice(0, 200)}`));
          }
          if ((res.statusCode ?? 500) >= 400) reject(new Error(`lab ${layout.name}: ${(v as { error?: string }).error ?? res.statusCode}`));
          else resolve(v as T);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`lab ${layout.name}: no answer within ${timeoutMs / 1000}s`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new LabNotRunning(`lab "${layout.name}" is not running (start it with: weft up --name ${layout.name})`));
      else reject(e);
    });
    req.end(data);
  });
}
