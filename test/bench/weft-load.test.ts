// The bench's load generator (bench/tools/weft-load.c) against real servers on loopback: every
// request answered is counted once and timed, failures are counted as what they are (lost,
// errors, non-2xx by code), and a hostile server can neither hang nor crash it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer as createHttp, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WEFT_LOAD } from '../../bench/setup.ts';

interface Out {
  completed: number;
  lost: number;
  errors: number;
  p50: number;
  p99: number;
  max: number;
  late_p50: number;
  late_p99: number;
  non2xx?: number;
  codes?: Record<string, number>;
  conn_per_s?: number;
}

// Asynchronous: the servers under test run in this process, and spawnSync would freeze them.
const load = (...args: string[]): Promise<Out> =>
  new Promise((resolve, reject) => {
    const c = spawn(WEFT_LOAD, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim()) as Out) : reject(new Error(`weft-load ${args.join(' ')}: exit ${code}: ${err}`))));
  });

const listening = (s: Server | HttpServer) => new Promise<number>((r) => s.listen(0, '127.0.0.1', () => r((s.address() as AddressInfo).port)));

const children: ChildProcess[] = [];
const servers: (Server | HttpServer)[] = [];
let echoPort = 0;

beforeAll(async () => {
  if (!existsSync(WEFT_LOAD)) throw new Error(`${WEFT_LOAD} is missing: make tools`);
  const echo = spawn(WEFT_LOAD, ['echo', '0', '1024'], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(echo);
  echoPort = await new Promise<number>((resolve, reject) => {
    echo.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { port: number }).port));
    echo.once('exit', (c) => reject(new Error(`echo exited ${c}`)));
  });
});

afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const s of servers) s.close();
});

async function http(handler: Parameters<typeof createHttp>[1]): Promise<number> {
  const s = createHttp({ keepAliveTimeout: 60_000 }, handler);
  servers.push(s);
  return listening(s);
}

describe('weft-load tcp', () => {
  it('sends every request on time and times each reply once', async () => {
    const o = await load('tcp', '127.0.0.1', String(echoPort), '500', '4', '1', '1024', '0.2');
    expect(o).toMatchObject({ completed: 500, lost: 0, errors: 0 });
    expect(o.p50).toBeGreaterThan(0);
    expect(o.max).toBeGreaterThanOrEqual(o.p99);
    expect(o.late_p99).toBeGreaterThanOrEqual(o.late_p50);
  });

  it('counts requests a server never answers as lost, and ends (bounded drain)', async () => {
    const s = createServer((c) => c.on('data', () => {}));
    servers.push(s);
    const port = await listening(s);
    const o = await load('tcp', '127.0.0.1', String(port), '100', '2', '0.5', '1024', '0');
    expect(o.completed).toBe(0);
    expect(o.lost).toBe(50);
  }, 30_000);

  it('counts a connection reset mid-run as an error and its requests as lost', async () => {
    let n = 0;
    const s = createServer((c) => {
      c.on('data', (d) => {
        n += d.length;
        if (n > 20 * 1024) c.resetAndDestroy();
        else c.write(Buffer.alloc(d.length));
      });
      c.on('error', () => {});
    });
    servers.push(s);
    const port = await listening(s);
    const o = await load('tcp', '127.0.0.1', String(port), '200', '1', '0.5', '1024', '0');
    expect(o.errors).toBe(1);
    expect(o.completed + o.lost).toBe(100);
    expect(o.lost).toBeGreaterThan(0);
  });

  it('refuses bad arguments with the argument named', () => {
    const r = spawnSync(WEFT_LOAD, ['tcp', '127.0.0.1', String(echoPort), 'fast', '4', '1'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('bad RATE');
  });
});

describe('weft-load http', () => {
  it('reads Content-Length and chunked responses and counts other than 2xx by code', async () => {
    let i = 0;
    const port = await http((req, res) => {
      req.resume();
      req.on('end', () => {
        const k = i++ % 3;
        if (k === 0) res.writeHead(200, { 'content-length': '1024' }).end(Buffer.alloc(1024));
        else if (k === 1) res.writeHead(200).end('x'.repeat(3000)); // chunked: no length given
        else res.writeHead(503, { 'content-length': '2' }).end('no');
      });
    });
    const o = await load('http', '127.0.0.1', String(port), '300', '4', '1', '1024', '0', 'example.test');
    expect(o).toMatchObject({ completed: 300, lost: 0, errors: 0, non2xx: 100, codes: { 503: 100 } });
  });

  it('sends the Host header and the extra header lines it is given', async () => {
    const seen = new Set<string>();
    const port = await http((req, res) => {
      seen.add(`${req.headers.host} ${req.headers.authorization} ${req.headers['content-length']}`);
      req.resume();
      req.on('end', () => res.writeHead(204).end());
    });
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const dir = mkdtempSync('/tmp/weft-load-test-');
    try {
      writeFileSync(`${dir}/h`, 'authorization: Bearer abc\n\n');
      const o = await load('http', '127.0.0.1', String(port), '50', '2', '0.4', '10', '0', 'svc.example', `${dir}/h`);
      expect(o).toMatchObject({ completed: 20, lost: 0, errors: 0, non2xx: 0 });
      expect([...seen]).toEqual(['svc.example Bearer abc 10']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('survives a server that closes after each response or answers garbage', async () => {
    const closing = await http((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { connection: 'close', 'content-length': '1' }).end('k'));
    });
    const a = await load('http', '127.0.0.1', String(closing), '100', '2', '0.5', '16', '0');
    // Every response arrives; each close then costs a reconnect (an error), never a lost request.
    expect(a.completed + a.lost).toBe(50);
    expect(a.completed).toBeGreaterThan(40);
    const garbage = createServer((c) => {
      c.on('data', () => c.write('NOT HTTP AT ALL\r\n\r\n'));
      c.on('error', () => {});
    });
    servers.push(garbage);
    const g = await load('http', '127.0.0.1', String(await listening(garbage)), '50', '2', '0.4', '16', '0');
    expect(g.completed).toBe(0);
    expect(g.errors).toBeGreaterThan(0);
    // A head that never ends: refused at 64 KiB, not buffered without bound.
    const endless = createServer((c) => {
      c.on('data', () => c.write(`HTTP/1.1 200 OK\r\n${'x-pad: y\r\n'.repeat(10_000)}`));
      c.on('error', () => {});
    });
    servers.push(endless);
    const e = await load('http', '127.0.0.1', String(await listening(endless)), '20', '1', '0.2', '16', '0');
    expect(e.completed).toBe(0);
    expect(e.errors).toBeGreaterThan(0);
  }, 40_000);
});

describe('weft-load connrate', () => {
  it('opens, uses and closes connections for the time given', async () => {
    const o = await load('connrate', '127.0.0.1', String(echoPort), '2', '0.5', '1024');
    expect(o.errors).toBe(0);
    expect(o.conn_per_s).toBeGreaterThan(0);
  });
});
