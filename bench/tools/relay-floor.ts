// What one relay hop costs on this machine, whatever the proxy: the 1 KB request/response load of
// `make bench` (1000 req/s over 4 connections) through a plain TCP relay on loopback, and the CPU
// each process used per 1000 req/s. Relays: HAProxy (one thread) and a Node relay using the agent's
// own forward() both ways; the echo server behind them (weft-load's, in C: one read and one write per
// request) is measured too. No TLS and no HTTP/2: this is the floor under the agent's and HAProxy's figures
// in `make bench`, where each does the same hop plus mutual TLS (and the agent HTTP/2).
//   node --import tsx bench/tools/relay-floor.ts [--rate 1000] [--seconds 8]
//   (internal role: relay-floor.ts node-relay LISTEN TARGET)
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { forward } from '../../src/hbone/forward.ts';
import { cpuSeconds } from '../measure.ts';
import { WEFT_LOAD } from '../setup.ts';

function nodeRelay(listen: number, target: number): void {
  createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (client: Socket) => {
    const up = connect({ port: target, host: '127.0.0.1', noDelay: true, allowHalfOpen: true }, () => {
      forward(up, client);
      forward(client, up);
    });
    for (const s of [client, up]) s.on('error', () => [client, up].forEach((x) => x.destroy()));
  }).listen(listen, '127.0.0.1', () => console.log('ready'));
}

function ready(p: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    p.stdout?.on('data', (d: Buffer) => /ready|listening/.test(d.toString()) && resolve());
    p.once('exit', (code) => reject(new Error(`exited ${code}`)));
  });
}

async function main(): Promise<void> {
  const arg = (name: string, def: string) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1]! : def;
  };
  const rate = Number(arg('--rate', '1000'));
  const seconds = Number(arg('--seconds', '8'));
  const base = 20000 + Math.floor(Math.random() * 20000);
  const [echoPort, hapPort, nodePort] = [base, base + 1, base + 2];
  const dir = mkdtempSync(join(tmpdir(), 'weft-floor-'));
  const children: ChildProcess[] = [];
  try {
    const echo = spawn(WEFT_LOAD, ['echo', String(echoPort), '1024'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(echo);
    await ready(echo);
    const cfg = join(dir, 'haproxy.cfg');
    writeFileSync(cfg, `global\n  nbthread 1\n  maxconn 1024\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten relay\n  bind 127.0.0.1:${hapPort}\n  server echo 127.0.0.1:${echoPort}\n`);
    const hap = spawn('haproxy', ['-db', '-f', cfg], { stdio: 'ignore' });
    children.push(hap);
    const relay = spawn(process.execPath, ['--import', 'tsx', import.meta.filename, 'node-relay', String(nodePort), String(echoPort)], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(relay);
    await ready(relay);
    await new Promise((r) => setTimeout(r, 500)); // HAProxy has no ready line
    const out: Record<string, unknown> = { rate, seconds };
    for (const [name, port, pid] of [['haproxy', hapPort, hap.pid!], ['node', nodePort, relay.pid!]] as const) {
      const load = (s: number) =>
        spawnSync(WEFT_LOAD, ['tcp', '127.0.0.1', String(port), String(rate), '4', String(s), '1024', '0'], { encoding: 'utf8' });
      load(2); // warm-up: connections, and the JIT of the Node relay
      const before = [cpuSeconds(pid), cpuSeconds(echo.pid!)];
      const r = load(seconds);
      const l = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { completed: number; p50: number };
      const per = (cpu: number) => Math.round((cpu / (l.completed / 1000)) * 1000) / 1000;
      out[`${name}_relay_cpu_per_krps`] = per(cpuSeconds(pid) - before[0]!);
      out[`echo_behind_${name}_cpu_per_krps`] = per(cpuSeconds(echo.pid!) - before[1]!);
      out[`${name}_p50_us`] = l.p50;
    }
    console.log(JSON.stringify(out));
  } finally {
    for (const c of children) c.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === 'node-relay') nodeRelay(Number(process.argv[3]), Number(process.argv[4]));
else await main();
