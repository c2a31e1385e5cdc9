// The agent's data path without a lab, for iterating on it in seconds: two processes on loopback
// playing the client-side agent (plain TCP in → HBONE pool → tunnel) and the server-side agent
// (HboneServer → dial the app → tunnel), with iperf3 and the 1 KB request/response load generator
// of `make bench` in front. Prints throughput, latency at a fixed rate, connections/s, and the CPU
// each agent process used per 1000 requests/s. Not a substitute for `make bench` (no eBPF capture,
// no netns, one machine's loopback): a quick A/B for relay changes. Root (SO_MARK on dials).
//   node --import tsx bench/tools/relay-micro.ts [--prof DIR | --perf FILE|strace] [--rate 1000]
//     [--seconds 5] [--phases throughput,latency,connrate] [--data-path native|node|haproxy]
//     [--accept native|node] [--inbound dial|upstream] [--attach early|late]
//     [--conn-concurrency 8]
//   (--accept: who accepts the client agent's plain TCP on the native data path: the relay thread,
//   as the agent's 15001 does (the default), or a Node net.Server, as it did before)
//   (haproxy: a pair of HAProxy instances tunnelling plain → mutual TLS → plain, as in `make bench`)
//   (--inbound: the server side answers as the agent does, a `dial` decision the server connects
//   itself; `upstream`: as the agent did before, dialling in JavaScript and handing over the socket)
//   (--attach: a natively accepted fd goes with the CONNECT and the relay attaches it on 200 (early,
//   as the agent does), or JavaScript attaches it after the 200 (late, as it did before))
//   (internal roles: relay-micro.ts server|client PORT ...)
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HbonePool, createHboneServer, type Credentials, type HboneTunnel } from '../../src/hbone/index.ts';
import { nativeSessionOpener } from '../../src/hbone/native/client.ts';
import { NativeHboneServer } from '../../src/hbone/native/server.ts';
import { AcceptedFd, NativeListener } from '../../src/hbone/native/listener.ts';
import { listenerInNetns } from '../../src/bpf/netns.ts';
import { dialFromPod, podDialSockets } from '../../src/agent/proxy/pod-sockets.ts';
import { WEFT_LOAD } from '../setup.ts';

const TD = 'cluster.local';
const SELF = import.meta.filename;
// Dials go through the same setns path as in a pod: an fd of our own netns.
const HERE_NETNS = podDialSockets(openSync('/proc/self/ns/net', 'r'));
const NATIVE = (process.env.MICRO_DATA_PATH ?? 'native') === 'native';
const NATIVE_ACCEPT = NATIVE && (process.env.MICRO_ACCEPT ?? 'native') === 'native';
const INBOUND_UPSTREAM = process.env.MICRO_INBOUND === 'upstream';
const LATE_ATTACH = process.env.MICRO_ATTACH === 'late';

function creds(dir: string, who: string): Credentials {
  const r = (f: string) => readFileSync(join(dir, f), 'utf8');
  return { key: r(`${who}.key`), certChain: r(`${who}.crt`), root: r('ca.pem') };
}

function makePki(dir: string): void {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=micro-ca');
  for (const who of ['server', 'client']) {
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/O=${TD}`);
    writeFileSync(join(dir, `${who}.ext`), `subjectAltName=critical,URI:spiffe://${TD}/ns/micro/sa/${who}\nextendedKeyUsage=serverAuth,clientAuth\n`);
    ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.crt`, '-days', '2', '-extfile', `${who}.ext`);
  }
}

async function serverRole(port: number, pki: string): Promise<void> {
  const c = creds(pki, 'server');
  const opts = {
    credentials: () => c,
    trustDomain: TD,
    onConnect: async (req: { authority: { address: string; port: number } }) => INBOUND_UPSTREAM
      ? { status: 200 as const, upstream: await dialFromPod(HERE_NETNS, req.authority) }
      : { status: 200 as const, dial: { fd: HERE_NETNS.take(req.authority.address.includes(':') ? 6 : 4), ...req.authority } },
  };
  const hb = NATIVE ? new NativeHboneServer(opts) : createHboneServer(opts);
  await hb.listen({ port, host: '127.0.0.1' });
  console.log('ready', ballast.length);
}

async function clientRole(hbonePort: number, pki: string, routes: string[]): Promise<void> {
  const c = creds(pki, 'client');
  const pool = NATIVE ? new HbonePool<HboneTunnel>({ open: nativeSessionOpener() }) : new HbonePool<HboneTunnel>();
  for (const route of routes) {
    const [listen, target] = route.split('=') as [string, string];
    const serve = (client: Socket | AcceptedFd) => {
      if (!(client instanceof AcceptedFd)) client.on('error', () => {});
      void (async () => {
        try {
          const t = await pool.connect({
            key: { scope: 'micro', srcIdentity: `spiffe://${TD}/ns/micro/sa/client`, dstIdentity: `spiffe://${TD}/ns/micro/sa/server`, dstAddress: '127.0.0.1' },
            port: hbonePort,
            authority: target,
            headers: { forwarded: `for="127.0.0.1:${client.remotePort}"` },
            credentials: c,
            dial: () => dialFromPod(HERE_NETNS, { address: '127.0.0.1', port: hbonePort }),
            appFd: client instanceof AcceptedFd && !LATE_ATTACH ? client.fd : undefined, // early attach, as the agent does
          });
          await t.relay(client instanceof AcceptedFd ? client.take() : client);
        } catch {
          if (client instanceof AcceptedFd) client.reset();
          else client.resetAndDestroy();
        }
      })();
    };
    if (NATIVE_ACCEPT) {
      new NativeListener(listenerInNetns(null, '127.0.0.1', Number(listen)), serve);
      setInterval(() => {}, 1 << 30); // the relay's listeners do not keep the process alive, as a net.Server does
      continue;
    }
    const srv = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, serve);
    await new Promise<void>((r) => srv.listen(Number(listen), '127.0.0.1', r));
  }
  console.log('ready', ballast.length);
}

/** CPU seconds (user + system) a process has used so far; `sys` alone with kind 'sys'. */
function cpuSeconds(pid: number, kind: 'all' | 'sys' = 'all'): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return ((kind === 'all' ? Number(x[11]) : 0) + Number(x[12])) / 100;
}

function start(args: string[], nodeArgs: string[]): Promise<ChildProcess> {
  const p = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', SELF, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  p.stdout!.on('data', (d: Buffer) => process.env.MICRO_VERBOSE && process.stderr.write(`[${args[0]}] ${d}`));
  return new Promise((resolve, reject) => {
    p.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve(p));
    p.once('exit', (code) => reject(new Error(`${args[0]} exited ${code}`)));
  });
}

/** One HAProxy of the comparison pair: `server` terminates mutual TLS, `client` originates it. */
async function startHaproxy(dir: string, role: 'server' | 'client', routes: string[]): Promise<ChildProcess> {
  writeFileSync(join(dir, `${role}.pem`), readFileSync(join(dir, `${role}.crt`), 'utf8') + readFileSync(join(dir, `${role}.key`), 'utf8'));
  const tls = role === 'server'
    ? `ssl crt ${dir}/server.pem ca-file ${dir}/ca.pem verify required ssl-min-ver TLSv1.3`
    : `ssl crt ${dir}/client.pem ca-file ${dir}/ca.pem verify required ssl-min-ver TLSv1.3`;
  let cfg = 'global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n';
  routes.forEach((r, i) => {
    const [listen, target] = r.split('=') as [string, string];
    cfg += role === 'server'
      ? `listen r${i}\n  bind 127.0.0.1:${listen} ${tls}\n  server s ${target}\n`
      : `listen r${i}\n  bind 127.0.0.1:${listen}\n  server s ${target} ${tls}\n`;
  });
  writeFileSync(join(dir, `haproxy-${role}.cfg`), cfg);
  const p = spawn('haproxy', ['-db', '-f', join(dir, `haproxy-${role}.cfg`)], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  if (p.exitCode !== null) throw new Error(`haproxy ${role} exited ${p.exitCode}`);
  return p;
}

async function orchestrate(): Promise<void> {
  const arg = (name: string, def: string) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1]! : def;
  };
  const prof = arg('--prof', '');
  const perf = arg('--perf', ''); // perf record the two agents during the measured phases
  const rate = arg('--rate', '1000');
  const seconds = Number(arg('--seconds', '5'));
  const phases = arg('--phases', 'throughput,latency,connrate').split(',');
  // At 1, connrate is one connection's round trip after another: its rate is 1 / the time a new connection takes.
  const connConcurrency = arg('--conn-concurrency', '8');
  process.env.MICRO_DATA_PATH = arg('--data-path', 'native');
  process.env.MICRO_ACCEPT = arg('--accept', 'native');
  process.env.MICRO_INBOUND = arg('--inbound', 'dial');
  process.env.MICRO_ATTACH = arg('--attach', 'early');
  const dir = mkdtempSync(join(tmpdir(), 'weft-micro-'));
  makePki(dir);
  // Below the ephemeral range (32768+): a busy machine's connections in TIME-WAIT there make listen() fail.
  const base = 20000 + Math.floor(Math.random() * 12000);
  const [iperfPort, echoPort, hbonePort, iperfIn, echoIn] = [base, base + 1, base + 2, base + 3, base + 4];
  const children: ChildProcess[] = [];
  try {
    children.push(spawn('iperf3', ['-s', '-p', String(iperfPort), '-B', '127.0.0.1'], { stdio: 'ignore' }));
    children.push(spawn(WEFT_LOAD, ['echo', String(echoPort), '1024'], { stdio: 'ignore' }));
    const nodeArgs = prof ? ['--cpu-prof', `--cpu-prof-dir=${prof}`] : perf ? ['--perf-basic-prof-only-functions'] : [];
    nodeArgs.push(...(process.env.MICRO_NODE_ARGS ?? '').split(' ').filter(Boolean));
    const routes = [`${iperfIn}=127.0.0.1:${iperfPort}`, `${echoIn}=127.0.0.1:${echoPort}`];
    const haproxy = process.env.MICRO_DATA_PATH === 'haproxy';
    const srv = haproxy ? await startHaproxy(dir, 'server', routes.map((_, i) => `${hbonePort + 10 + i}=${routes[i]!.split('=')[1]}`)) : await start(['server', String(hbonePort), dir], nodeArgs);
    children.push(srv);
    const cli = haproxy
      ? await startHaproxy(dir, 'client', routes.map((r, i) => `${r.split('=')[0]}=127.0.0.1:${hbonePort + 10 + i}`))
      : await start(['client', String(hbonePort), dir, ...routes], nodeArgs);
    children.push(cli);
    const out: Record<string, unknown> = {};
    const load = (...a: string[]) => {
      const r = spawnSync(WEFT_LOAD, a, { encoding: 'utf8' });
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, number>;
    };
    load('tcp', '127.0.0.1', String(echoIn), '200', '4', '1', '1024', '0'); // warm: session, certs
    // --perf FILE: perf record -g of both agents; --perf strace: syscall counts in /tmp/weft-micro-strace.txt.
    const rec = perf === 'strace'
      ? spawn('strace', ['-c', '-f', '-o', '/tmp/weft-micro-strace.txt', '-p', String(srv.pid), '-p', String(cli.pid)], { stdio: 'ignore' })
      : perf
        ? spawn('perf', ['record', '-g', '-o', perf, '-p', `${srv.pid},${cli.pid}`], { stdio: 'ignore' })
        : undefined;
    if (phases.includes('throughput')) {
      const cpu0 = cpuSeconds(srv.pid!) + cpuSeconds(cli.pid!);
      const iperf = spawnSync('iperf3', ['-c', '127.0.0.1', '-p', String(iperfIn), '-t', String(seconds), '-J'], { encoding: 'utf8' });
      const end = JSON.parse(iperf.stdout).end;
      out.throughput_gbps = Math.round((end.sum_received.bits_per_second / 1e9) * 100) / 100;
      // Less sensitive to a busy machine than Gbit/s: bytes relayed per CPU-second of both agents.
      out.gbit_per_agent_cpu_s = Math.round(((end.sum_received.bytes * 8) / 1e9 / (cpuSeconds(srv.pid!) + cpuSeconds(cli.pid!) - cpu0)) * 100) / 100;
    }
    if (phases.includes('latency')) {
      const before = [srv.pid!, cli.pid!].map((p) => cpuSeconds(p));
      const beforeSys = [srv.pid!, cli.pid!].map((p) => cpuSeconds(p, 'sys'));
      const t = Date.now();
      const l = load('tcp', '127.0.0.1', String(echoIn), rate, '4', String(seconds), '1024', '1');
      const secs = (Date.now() - t) / 1000;
      const used = [srv.pid!, cli.pid!].map((p, i) => cpuSeconds(p) - before[i]!);
      const sys = [srv.pid!, cli.pid!].map((p, i) => cpuSeconds(p, 'sys') - beforeSys[i]!);
      out.sys_share = sys.map((x, i) => Math.round((x / Math.max(0.01, used[i]!)) * 100) / 100);
      out.latency = { p50: l.p50, p90: l.p90, p99: l.p99, p999: l.p999, lost: l.lost };
      out.cpu_per_krps = { server: Math.round((used[0]! / secs / (Number(rate) / 1000)) * 1000) / 1000, client: Math.round((used[1]! / secs / (Number(rate) / 1000)) * 1000) / 1000 };
    }
    if (phases.includes('connrate')) {
      const before = [srv.pid!, cli.pid!].map((p) => cpuSeconds(p));
      const r = load('connrate', '127.0.0.1', String(echoIn), connConcurrency, String(seconds), '1024');
      out.conn_per_s = r.conn_per_s;
      // Each agent's CPU per new connection (the issue's ~2 ms), in milliseconds: less sensitive to a busy machine than the rate.
      const [server, client] = [srv.pid!, cli.pid!].map((p, i) => Math.round(((cpuSeconds(p) - before[i]!) / Math.max(1, r.connections!)) * 1e6) / 1000);
      out.cpu_ms_per_conn = { server, client };
    }
    if (rec) {
      rec.kill('SIGINT');
      await new Promise((r) => rec.once('exit', r));
    }
    console.log(JSON.stringify(out));
  } finally {
    for (const c of children.reverse()) c.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 1500)); // --cpu-prof writes on exit
    if (!prof && !perf) rmSync(dir, { recursive: true, force: true }); // kept when it holds a profile
  }
}

// The lab agent's old generation is ~50 MB (loader, protos, mesh state), which makes every major
// GC expensive; MICRO_HEAP_MB=50 gives the roles a retained heap of that size to match.
const ballast = Array.from({ length: Number(process.env.MICRO_HEAP_MB ?? 0) * 1024 }, (_, i) => ({ i, s: `x${i}`.repeat(30), a: [i, i + 1] }));
const role = process.argv[2];
if (role === 'server' || role === 'client') process.on('SIGINT', () => process.exit(0)); // lets --cpu-prof write
if (role === 'server') await serverRole(Number(process.argv[3]), process.argv[4]!);
else if (role === 'client') await clientRole(Number(process.argv[3]), process.argv[4]!, process.argv.slice(5));
else await orchestrate();
