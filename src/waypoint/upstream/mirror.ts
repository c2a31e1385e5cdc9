// request_mirror_policies: a copy of the request to another cluster, fire and forget, as Envoy's
// shadowing (the authority suffixed "-shadow", the answer dropped). Bounded so a mirror never
// costs the main request anything: the body copy stops at MAX_BODY (the mirror is then dropped,
// never sent truncated), at most MAX_IN_FLIGHT mirrors run at once, each gives up after
// TIMEOUT_MS, and no error of a mirror reaches the main request.
import http, { type OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import type { MeshIndex } from '../mesh.ts';
import type { Endpoint, Route, RoutingTable } from '../router/table.ts';
import type { Balancer } from './balancer.ts';
import { endTunnel } from './end-tunnel.ts';
import { openTunnel, type UpstreamOptions } from './forward.ts';

export const MAX_BODY = 64 * 1024;
export const MAX_IN_FLIGHT = 128;
export const TIMEOUT_MS = 10_000;

export interface MirrorTarget {
  cluster: string;
  endpoint: Endpoint;
  identity: string;
}

let inFlight = 0;
/** Mirrors running now (for tests and stats). */
export const mirrorsInFlight = () => inFlight;

/** Which mirrors this request gets: each policy's share rolled, its cluster's endpoint chosen; unreachable ones skipped. */
export function chooseMirrors(route: Route, table: RoutingTable, mesh: MeshIndex, balancer: Balancer, random: () => number = Math.random): MirrorTarget[] {
  const out: MirrorTarget[] = [];
  for (const m of route.mirrors ?? []) {
    if (m.fraction <= 0 || (m.fraction < 1 && random() >= m.fraction)) continue;
    const c = table.clusters.get(m.cluster);
    if (!c) continue;
    const endpoints = (table.endpoints.get(c.edsName) ?? []).filter((e) => mesh.identity(e.address) !== undefined);
    const endpoint = balancer.endpoint(m.cluster, endpoints);
    if (endpoint) out.push({ cluster: m.cluster, endpoint, identity: mesh.identity(endpoint.address)! });
  }
  return out;
}

/** Envoy's shadowAppendedHost: "web:80" -> "web-shadow:80". */
export function shadowHost(host: string): string {
  const m = /^(\[[^\]]*\]|[^:]*)(:\d+)?$/.exec(host);
  return m ? `${m[1]}-shadow${m[2] ?? ''}` : `${host}-shadow`;
}

/** Starts the mirrors of one request; `body` is the request body the main forward also reads. Never throws, never waits. */
export function startMirrors(o: UpstreamOptions, targets: MirrorTarget[], req: { method: string; url: string; headers: OutgoingHttpHeaders; body: Readable }): void {
  if (!targets.length) return;
  const head = { method: req.method, url: req.url, headers: { ...req.headers } };
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  const onData = (c: Buffer) => {
    if (over) return;
    size += c.length;
    if (size > MAX_BODY) {
      over = true;
      chunks.length = 0;
    } else chunks.push(c);
  };
  const done = () => {
    req.body.off('data', onData);
    if (over) return;
    const body = Buffer.concat(chunks);
    for (const t of targets) send(o, t, head, body);
  };
  req.body.on('data', onData);
  req.body.once('end', done);
}

function send(o: UpstreamOptions, t: MirrorTarget, req: { method: string; url: string; headers: OutgoingHttpHeaders }, body: Buffer): void {
  if (inFlight >= MAX_IN_FLIGHT) return;
  inFlight++;
  let finished = false;
  let up: http.ClientRequest | undefined;
  let tunnelRef: Duplex | undefined;
  /** `clean`: the response ended, so the tunnel ends too (no reset; see end-tunnel.ts). */
  const finish = (clean?: unknown) => {
    if (finished) return;
    finished = true;
    inFlight--;
    clearTimeout(timer);
    if (clean === true && tunnelRef) return void endTunnel(tunnelRef);
    up?.destroy();
    tunnelRef?.destroy();
  };
  const timer = setTimeout(finish, TIMEOUT_MS);
  timer.unref();
  const headers: OutgoingHttpHeaders = { ...req.headers, host: shadowHost(String(req.headers.host ?? '')) };
  // The body is whole here: sent with its length (none for a bodiless request, as it came).
  delete headers['transfer-encoding'];
  delete headers['content-length'];
  if (body.length || req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) headers['content-length'] = String(body.length);
  openTunnel(o, t.endpoint, t.identity, {}).then(
    (tunnel) => {
      tunnelRef = tunnel;
      if (finished) return void tunnel.destroy();
      up = http.request({ createConnection: () => tunnel as Socket, method: req.method, path: req.url, headers, setHost: false });
      up.on('error', finish);
      up.on('response', (res) => {
        res.on('error', finish);
        res.on('end', () => finish(true));
        res.resume();
      });
      up.end(body);
    },
    finish,
  );
}
