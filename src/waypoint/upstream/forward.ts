// The action for a forwarded request: an HBONE CONNECT to the chosen endpoint (its pod's 15008,
// `:authority` podIP:targetPort, the endpoint's SPIFFE id expected, the waypoint's own certificate
// presented), then the request as HTTP/1.1 inside the tunnel. Bodies stream both ways (nothing is
// buffered whole); hop-by-hop headers (RFC 9110 7.6.1, and those the Connection header names) are
// not forwarded. A tunnel is closed after its exchange unless the caller keeps it (`keepAlive`,
// h1-pool.ts): then the request asks for keep-alive and a reusable tunnel is handed back.
// Failures map to Envoy's response flags: UF (the tunnel could not be opened: 503), UC (the
// upstream closed before a response: 503), UT (the route timeout: 504), UR (the upstream reset
// mid-response), DC (the client went away).
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import net, { type Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { formatAuthority } from '../../hbone/authority.ts';
import type { HbonePool } from '../../hbone/pool.ts';
import { HBONE_PORT, type Credentials } from '../../hbone/settings.ts';
import { buffersOnly } from '../buffers-only.ts';
import { endTunnel } from './end-tunnel.ts';
import type { Endpoint } from '../router/table.ts';

export interface UpstreamOptions {
  pool: HbonePool;
  /** The waypoint's own credentials (re-read per tunnel: they rotate). */
  credentials: () => Credentials;
  /** The waypoint's SPIFFE id (the pool key's source). */
  identity: string;
  /** Where an endpoint's HBONE listener is (its pod IP, 15008 unless given); tests map addresses here. */
  dial?: (address: string, port: number) => Promise<Socket>;
  hbonePort?: number;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'http2-settings']);

/** Headers to forward: no hop-by-hop ones, none the Connection header names, no HTTP/2 pseudo-headers. */
export function endToEnd(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  // On every request: a plain loop, and the Connection header's names only when it has any.
  const connection = headers.connection;
  const named = connection ? new Set(String(connection).toLowerCase().split(',').map((s) => s.trim())) : undefined;
  const out: OutgoingHttpHeaders = {};
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined || k.charCodeAt(0) === 58 /* ':' */ || HOP_BY_HOP.has(k) || named?.has(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Milliseconds an endpoint's `Keep-Alive: timeout=N` allows an idle connection, less a second (as Node's agent); undefined without a hint. */
export function keepAliveHint(value: string | undefined): number | undefined {
  const n = /(?:^|[\s,])timeout=(\d+)/i.exec(value ?? '')?.[1];
  return n === undefined ? undefined : Number(n) * 1000 - 1000;
}

export function dialTcp(address: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: address, port, noDelay: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Opens the tunnel to an endpoint: the Duplex to speak HTTP/1.1 on. Throws HboneError. */
export async function openTunnel(o: UpstreamOptions, endpoint: Endpoint, dstIdentity: string, headers: Record<string, string>): Promise<Duplex> {
  const port = o.hbonePort ?? HBONE_PORT;
  const dial = o.dial ?? dialTcp;
  const tunnel = await o.pool.connect({
    key: { scope: 'waypoint', srcIdentity: o.identity, dstIdentity, dstAddress: endpoint.address },
    port,
    authority: formatAuthority(endpoint),
    headers,
    credentials: o.credentials(),
    dial: () => dial(endpoint.address, port),
  });
  return buffersOnly(tunnel.stream);
}

export interface ForwardResult {
  status: number;
  flags: string;
  details?: string;
  requestBytes: number;
  responseBytes: number;
  /** The upstream's grpc-status, when it came with the headers (a trailers-only response). */
  grpcStatus?: number;
  /** The response was refused by Exchange.accept: nothing was sent to the client. */
  discarded?: boolean;
  /**
   * An HTTP/2 stream ended before a response: `remote`, reset by the upstream (RST_STREAM, flag
   * UR); `refused`, never processed (REFUSED_STREAM, past a GOAWAY's last stream, or a session
   * already closing): safe to retry.
   */
  reset?: 'remote' | 'refused';
}

/** What a request handler gives the forwarder: the request and response of either HTTP version. */
export interface Exchange {
  method: string;
  /** Path with query. */
  url: string;
  /** Request headers to send on (already end-to-end, with host). */
  headers: OutgoingHttpHeaders;
  body: Readable;
  /** Called once with the upstream's status and end-to-end headers. */
  respond(status: number, headers: OutgoingHttpHeaders): void;
  /** The response body sink. */
  sink: NodeJS.WritableStream & { destroy(e?: Error): unknown; readonly writableFinished: boolean };
  /** Resolves when the client has gone away before the response finished. */
  gone: Promise<void>;
  /** Whether the response headers went out already. */
  headersSent(): boolean;
  /**
   * Looks at the upstream's response before anything reaches the client: false drops it (the
   * tunnel is closed, the result has flags `-` and `discarded`), for a retry.
   */
  accept?(status: number, headers: IncomingHttpHeaders): boolean;
}

/**
 * Sends the request through `tunnel` and the response back; resolves once either side is done.
 * `keepAlive`: the tunnel may be reused; it is called with the endpoint's Keep-Alive timeout hint
 * (ms, if any) once the exchange completed cleanly and Node's parser has let go of the tunnel, and
 * the tunnel is the caller's again. Otherwise the tunnel is closed.
 */
export function forwardOver(tunnel: Duplex, x: Exchange, timeoutMs: number, keepAlive?: (hintMs: number | undefined) => void): Promise<ForwardResult> {
  return new Promise((resolve) => {
    let freed = false;
    let kept: (() => void) | undefined;
    // Node's client emits 'free' on the socket once a keep-alive exchange let go of it.
    tunnel.once('free', () => {
      freed = true;
      kept?.();
    });
    let requestBytes = 0;
    let responseBytes = 0;
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    let grpcStatus: number | undefined;
    const finish = (status: number, flags: string, details?: string, discarded?: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const res = (up as { res?: http.IncomingMessage }).res;
      if (keepAlive && !discarded && flags === '-' && up.shouldKeepAlive && up.writableFinished && res?.complete && !tunnel.destroyed) {
        const hint = keepAliveHint(String(res.headers['keep-alive'] ?? ''));
        const fallback = setTimeout(() => tunnel.destroy(), 1000).unref(); // 'free' never came: not reusable
        kept = () => {
          kept = undefined;
          clearTimeout(fallback);
          keepAlive(hint);
        };
        if (freed) kept();
      } else if (!discarded && flags === '-' && up.writableFinished && res?.complete) endTunnel(tunnel);
      else if (!tunnel.destroyed) tunnel.destroy();
      resolve({ status, flags, details, requestBytes, responseBytes, grpcStatus, ...(discarded ? { discarded } : {}) });
    };
    const headers = keepAlive ? { ...x.headers, connection: 'keep-alive' } : x.headers;
    const up = http.request({ createConnection: () => tunnel as Socket, method: x.method, path: x.url, headers, setHost: false });
    up.on('error', (e) => {
      if (done) return;
      if (!x.headersSent()) return finish(503, 'UC', `upstream: ${e.message}`);
      x.sink.destroy(); // mid-response: the client sees the reset
      finish(200, 'UR', `upstream reset mid-response: ${e.message}`);
    });
    if (timeoutMs > 0) {
      timer = setTimeout(() => {
        up.destroy();
        if (!x.headersSent()) finish(504, 'UT', `route timeout ${timeoutMs} ms`);
        else {
          x.sink.destroy();
          finish(200, 'UT', `route timeout ${timeoutMs} ms mid-response`);
        }
      }, timeoutMs);
    }
    void x.gone.then(() => {
      up.destroy();
      finish(0, 'DC', 'downstream went away');
    });
    x.body.on('data', (c: Buffer) => (requestBytes += c.length));
    x.body.pipe(up);
    up.once('response', (res) => {
      const status = res.statusCode ?? 502;
      if (res.headers['grpc-status'] !== undefined) grpcStatus = Number(res.headers['grpc-status']);
      if (x.accept && !x.accept(status, res.headers)) {
        up.destroy();
        return finish(status, '-', 'response discarded for a retry', true);
      }
      x.respond(status, endToEnd(res.headers));
      res.on('data', (c: Buffer) => (responseBytes += c.length));
      res.pipe(x.sink as NodeJS.WritableStream);
      const reset = () => {
        if (done) return;
        x.sink.destroy();
        finish(status, 'UR', 'upstream reset mid-response');
      };
      res.once('aborted', reset);
      res.once('error', reset);
      res.once('end', () => {
        const sink = x.sink as unknown as { once(e: string, f: () => void): void };
        if (x.sink.writableFinished) finish(status, '-');
        else sink.once('finish', () => finish(status, '-'));
      });
    });
  });
}
