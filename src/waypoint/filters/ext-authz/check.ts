// The authorization call itself, both ways Envoy speaks to an authorizer:
// - gRPC: envoy.service.auth.v3.Authorization/Check, a CheckRequest filled as Envoy fills it
//   (source and destination peers with addresses and SPIFFE principals, the HTTP request's id,
//   method, headers, path, host, scheme, protocol), one length-prefixed message each way, the
//   grpc-status in the trailers. An OK status allows (ok_response's header edits), any other
//   denies (denied_response's status, headers and body; 403 by default).
// - HTTP: the request's method to path_prefix + path with Host, Authorization, Content-Length (0)
//   and the allowed headers; 200 allows (allowed_upstream_headers copied upstream), 5xx is an
//   error, any other status denies with the answer's status, body and allowed_client_headers.
// Whatever fails (unreachable, timeout, malformed answer, a field the waypoint cannot apply) is
// thrown: the filter decides between failure_mode_allow and status_on_error.
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { AUTHORIZATION_CHECK, decodeAuth, encodeAuth } from '../../../api/envoy-auth.ts';
import type { FilterRequest } from '../chain.ts';
import type { ServiceChannels } from './channels.ts';
import type { AuthzService, ExtAuthzConfig } from './config.ts';
import { CallError, h1Exchange, h2Exchange, within, type Answer, type Bounds } from './exchange.ts';
import type { Matcher } from './match.ts';

/** The most an authorizer's answer may hold: body (or gRPC message) bytes, header entries. */
export const MAX_ANSWER_BYTES = 64 * 1024;
export const MAX_ANSWER_HEADERS = 100;

export type HeaderAction = 'append' | 'set' | 'add-if-absent' | 'overwrite-if-exists';
export interface HeaderEdit {
  name: string;
  value: string;
  action: HeaderAction;
}

export type Decision =
  | { kind: 'ok'; upstream: HeaderEdit[]; remove: string[]; response: HeaderEdit[]; metadata?: Record<string, unknown> }
  | { kind: 'denied'; status: number; headers: Record<string, string>; body: string };

type Msg = Record<string, unknown>;
const obj = (v: unknown): Msg | undefined => (v && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v) ? (v as Msg) : undefined);
const arr = (v: unknown): Msg[] => (Array.isArray(v) ? (v as Msg[]) : []);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const joined = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join(',') : (v ?? ''));

/** The body that goes with the check (with_request_body), and whether it is only part of it. */
export type CheckBody = { bytes: Buffer; partial: boolean };

export async function check(c: ExtAuthzConfig, channels: ServiceChannels, r: FilterRequest, signal?: AbortSignal, body?: CheckBody): Promise<Decision> {
  const { target, release } = channels.acquire(c.service.cluster);
  const bounds: Bounds = { timeoutMs: c.timeoutMs, maxBytes: MAX_ANSWER_BYTES + 5, maxHeaders: MAX_ANSWER_HEADERS, signal };
  // The timeout covers reaching the authorizer too: the exchange gets what is left of it.
  const deadline = Date.now() + c.timeoutMs;
  const left = (): Bounds => ({ ...bounds, timeoutMs: Math.max(1, deadline - Date.now()) });
  const session = () => within(channels.session(target), bounds);
  try {
    if (c.service.kind === 'grpc') {
      const headers = {
        ':method': 'POST', ':path': AUTHORIZATION_CHECK, ':authority': c.service.authority, ':scheme': 'http',
        'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': `${c.timeoutMs}m`, 'grpc-accept-encoding': 'identity',
        ...Object.fromEntries(c.service.initialMetadata),
      };
      const message = encodeAuth('envoy.service.auth.v3.CheckRequest', checkRequest(c, channels.identity, r, body));
      const frame = Buffer.alloc(5 + message.length);
      frame.writeUInt32BE(message.length, 1);
      message.copy(frame, 5);
      const answer = await h2Exchange(await session(), headers, frame, left());
      return grpcDecision(answer);
    }
    const s = c.service;
    const headers = httpCheckHeaders(c, s, r);
    if (body) {
      headers['content-length'] = String(body.bytes.length);
      headers['x-envoy-auth-partial-body'] = String(body.partial);
    }
    const payload = body?.bytes ?? Buffer.alloc(0);
    const path = s.pathPrefix + r.url;
    let answer: Answer;
    if (target.http2) {
      const { host, ...rest } = headers;
      answer = await h2Exchange(await session(), { ...rest, ':method': r.method, ':path': path, ':authority': String(host), ':scheme': 'http' }, payload, left());
    } else {
      const conn = await within(channels.connect(target), bounds, (late) => late.destroy());
      answer = await h1Exchange(conn, { method: r.method, path, headers }, payload, left());
    }
    return httpDecision(s, answer);
  } finally {
    release();
  }
}

/** `ip:port` (or `[ip]:port`) as an envoy.config.core.v3.Address. */
function address(hostPort: string): Msg | undefined {
  const i = hostPort.lastIndexOf(':');
  if (i <= 0) return undefined;
  return { socketAddress: { address: hostPort.slice(0, i).replace(/^\[|\]$/g, ''), portValue: Number(hostPort.slice(i + 1)) || 0 } };
}

function checkRequest(c: ExtAuthzConfig, waypointId: string, r: FilterRequest, body?: CheckBody): Msg {
  const headers: Record<string, string> = { ':authority': r.host, ':method': r.method, ':path': r.url, ':scheme': r.scheme };
  for (const [k, v] of Object.entries(r.headers)) {
    if (k.startsWith(':') || k === 'host' || v === undefined) continue;
    if (c.allowedHeaders && !c.allowedHeaders(k)) continue;
    if (c.disallowedHeaders?.(k)) continue;
    headers[k] = joined(v);
  }
  if (body) headers['x-envoy-auth-partial-body'] = String(body.partial);
  const now = Date.now();
  const length = Number(joined(r.headers['content-length']));
  return {
    attributes: {
      source: { address: address(r.peerAddress), ...(r.peerPrincipal && { principal: `spiffe://${r.peerPrincipal.replace(/^spiffe:\/\//, '')}` }) },
      destination: { address: address(r.destination), principal: waypointId },
      request: {
        time: { seconds: Math.floor(now / 1000), nanos: (now % 1000) * 1e6 },
        http: {
          id: joined(r.headers['x-request-id']) || randomUUID(), method: r.method, headers, path: r.url, host: r.host, scheme: r.scheme,
          protocol: r.protocol, size: Number.isFinite(length) && joined(r.headers['content-length']) !== '' ? length : -1,
          ...(body && (c.withBody?.packAsBytes ? { rawBody: body.bytes } : { body: body.bytes.toString('utf8') })),
        },
      },
    },
  };
}

function headerName(k: unknown, what: string): string {
  const name = typeof k === 'string' ? k.toLowerCase() : '';
  if (!TOKEN.test(name)) throw new Error(`${what}: invalid header name ${JSON.stringify(String(k)).slice(0, 80)}`);
  return name;
}

function headerValue(v: string, what: string): string {
  if (!VALUE.test(v)) throw new Error(`${what}: invalid header value`);
  return v;
}

/** HeaderValueOption entries: `append` false by default in these messages; append_action when append is unset. */
function headerEdits(list: unknown, what: string): HeaderEdit[] {
  const all = arr(list);
  if (all.length > MAX_ANSWER_HEADERS) throw new Error(`${what}: more than ${MAX_ANSWER_HEADERS} headers`);
  return all.map((o) => {
    const h = obj(o.header) ?? {};
    const name = headerName(h.key, what);
    const value = headerValue(typeof h.value === 'string' && h.value ? h.value : Buffer.isBuffer(h.rawValue) ? h.rawValue.toString('latin1') : '', what);
    const append = obj(o.append);
    let action: HeaderAction = 'set';
    if (append) action = append.value === true ? 'append' : 'set';
    else if (o.appendAction === 1) action = 'add-if-absent';
    else if (o.appendAction === 3) action = 'overwrite-if-exists';
    return { name, value, action };
  });
}

/** A google.protobuf.Struct as a plain object. */
function structValue(v: unknown): unknown {
  const o = obj(v) ?? {};
  if ('stringValue' in o) return o.stringValue;
  if ('numberValue' in o) return o.numberValue;
  if ('boolValue' in o) return o.boolValue;
  if ('structValue' in o) return struct(o.structValue);
  if ('listValue' in o) return arr(obj(o.listValue)?.values).map(structValue);
  return null;
}
const struct = (s: unknown): Record<string, unknown> => Object.fromEntries(Object.entries(obj(obj(s)?.fields) ?? {}).map(([k, v]) => [k, structValue(v)]));

function grpcDecision(a: Answer): Decision {
  const status = a.trailers['grpc-status'] ?? a.headers['grpc-status'];
  if (a.status !== 200) throw new Error(`authorizer answered HTTP ${a.status}`);
  if (status !== '0') throw new Error(`authorizer failed: grpc-status ${String(status ?? 'missing')}${a.trailers['grpc-message'] || a.headers['grpc-message'] ? ` (${decodeURIComponent(joined(a.trailers['grpc-message'] ?? a.headers['grpc-message'])).slice(0, 200)})` : ''}`);
  const b = a.body;
  if (b.length < 5) throw new Error('authorizer sent no CheckResponse');
  if (b[0] !== 0) throw new Error('authorizer sent a compressed message (identity only was accepted)');
  const n = b.readUInt32BE(1);
  if (n > MAX_ANSWER_BYTES) throw new Error(`CheckResponse larger than ${MAX_ANSWER_BYTES} bytes`);
  if (b.length !== 5 + n) throw new Error('authorizer sent other than one CheckResponse');
  let m: Msg;
  try {
    m = decodeAuth('envoy.service.auth.v3.CheckResponse', b.subarray(5));
  } catch (e) {
    throw new Error(`CheckResponse does not decode: ${(e as Error).message}`, { cause: e });
  }
  const code = Number(obj(m.status)?.code ?? 0);
  if (code === 0) {
    const ok = obj(m.okResponse) ?? {};
    if (arr(ok.queryParametersToSet).length || arr(ok.queryParametersToRemove).length) throw new Error('ok_response query parameter edits are not supported by the waypoint');
    if (arr(ok.dynamicMetadata).length || obj(ok.dynamicMetadata)) throw new Error('ok_response.dynamic_metadata (deprecated) is not supported by the waypoint');
    const remove = (Array.isArray(ok.headersToRemove) ? (ok.headersToRemove as unknown[]) : []).map((k) => headerName(k, 'ok_response.headers_to_remove'));
    if (remove.length > MAX_ANSWER_HEADERS) throw new Error(`ok_response.headers_to_remove: more than ${MAX_ANSWER_HEADERS}`);
    return {
      kind: 'ok',
      upstream: headerEdits(ok.headers, 'ok_response.headers'),
      remove,
      response: headerEdits(ok.responseHeadersToAdd, 'ok_response.response_headers_to_add'),
      ...(obj(m.dynamicMetadata) && { metadata: struct(m.dynamicMetadata) }),
    };
  }
  const denied = obj(m.deniedResponse) ?? {};
  const st = Number(obj(denied.status)?.code ?? 0);
  const headers: Record<string, string> = {};
  for (const e of headerEdits(denied.headers, 'denied_response.headers')) editRecord(headers, e);
  return { kind: 'denied', status: st >= 200 && st <= 599 ? st : 403, headers, body: typeof denied.body === 'string' ? denied.body : '' };
}

/** The headers of the HTTP check: Host, Authorization, Content-Length always, then the allowed ones, then headers_to_add. */
function httpCheckHeaders(c: ExtAuthzConfig, s: Extract<AuthzService, { kind: 'http' }>, r: FilterRequest): OutgoingHttpHeaders {
  const allowed: Matcher | undefined = s.allowedHeaders ?? c.allowedHeaders;
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(r.headers)) {
    if (k.startsWith(':') || v === undefined || k === 'host' || k === 'content-length' || HOP.has(k)) continue;
    if (k !== 'authorization' && !allowed?.(k)) continue;
    if (k !== 'authorization' && c.disallowedHeaders?.(k)) continue;
    out[k] = joined(v);
  }
  out.host = r.host;
  out['content-length'] = '0';
  for (const [k, v] of s.headersToAdd) out[k] = v;
  return out;
}

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);
/** Never taken from an HTTP authorizer's answer: hop-by-hop, framing, the authority, the removal list (read apart). */
const NOT_COPIED = new Set([...HOP, 'content-length', 'host', 'date', 'x-envoy-auth-headers-to-remove']);
/** Added to allowed_client_headers when it is set (Envoy's list). */
const ALWAYS_TO_CLIENT = new Set(['path', 'status', 'content-length', 'www-authenticate', 'location']);

function answerHeaders(h: IncomingHttpHeaders, pick: (k: string) => boolean): [string, string][] {
  const out: [string, string][] = [];
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith(':') || v === undefined || NOT_COPIED.has(k) || !pick(k)) continue;
    out.push([k, headerValue(joined(v), `authorizer header ${k}`)]);
  }
  return out;
}

function httpDecision(s: Extract<AuthzService, { kind: 'http' }>, a: Answer): Decision {
  if (a.status >= 500 || a.status < 100) throw new Error(`authorizer answered HTTP ${a.status}`);
  if (a.status === 200) {
    const upstream: HeaderEdit[] = [];
    if (s.upstream) for (const [name, value] of answerHeaders(a.headers, s.upstream)) upstream.push({ name, value, action: 'set' });
    if (s.upstreamAppend) for (const [name, value] of answerHeaders(a.headers, s.upstreamAppend)) upstream.push({ name, value, action: 'append' });
    const response = s.clientOnSuccess ? answerHeaders(a.headers, s.clientOnSuccess).map(([name, value]) => ({ name, value, action: 'set' as const })) : [];
    const remove = joined(a.headers['x-envoy-auth-headers-to-remove']).split(',').map((x) => x.trim().toLowerCase()).filter(Boolean);
    return { kind: 'ok', upstream, remove: remove.slice(0, MAX_ANSWER_HEADERS), response };
  }
  const client = s.client;
  const headers = Object.fromEntries(answerHeaders(a.headers, client ? (k) => ALWAYS_TO_CLIENT.has(k) || client(k) : () => true));
  return { kind: 'denied', status: a.status, headers, body: a.body.toString() };
}

/** One edit on a header record (the upstream request's headers, or the response's). */
export function editRecord(h: Record<string, string | string[] | undefined>, e: HeaderEdit): void {
  const has = h[e.name] !== undefined;
  if (e.action === 'append') h[e.name] = has ? `${joined(h[e.name])},${e.value}` : e.value;
  else if (e.action === 'set' || (e.action === 'add-if-absent' && !has) || (e.action === 'overwrite-if-exists' && has)) h[e.name] = e.value;
}

export { CallError };
