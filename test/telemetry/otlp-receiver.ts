// An OTLP/HTTP receiver for tests: takes POST /v1/traces and /v1/logs as protobuf (what the
// OpenTelemetry JS exporters send), decodes them with the spec's messages (otlp.proto) and keeps
// flattened spans and log records. Independent of the SDK that produced them.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const root = protobuf.loadSync(fileURLToPath(new URL('./otlp.proto', import.meta.url)));
const TRACES = root.lookupType('otlp.ExportTraceServiceRequest');
const LOGS = root.lookupType('otlp.ExportLogsServiceRequest');

type Attrs = Record<string, unknown>;

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  traceState: string;
  name: string;
  /** 1 internal, 2 server, 3 client... */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  attributes: Attrs;
  resource: Attrs;
  status: { code: number; message: string };
}

export interface ReceivedLog {
  timeNs: bigint;
  severityNumber: number;
  severityText: string;
  body: unknown;
  attributes: Attrs;
  resource: Attrs;
  traceId: string;
  spanId: string;
}

const hex = (b: Uint8Array | undefined) => Buffer.from(b ?? []).toString('hex');

type Any = { stringValue?: string; boolValue?: boolean; intValue?: number | string; doubleValue?: number; arrayValue?: { values?: Any[] }; kvlistValue?: { values?: KV[] }; bytesValue?: Uint8Array };
type KV = { key: string; value?: Any };

function value(v: Any | undefined): unknown {
  if (!v) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map(value);
  if (v.kvlistValue) return attrs(v.kvlistValue.values);
  if (v.bytesValue) return hex(v.bytesValue);
  return undefined;
}

const attrs = (kvs: KV[] | undefined): Attrs => Object.fromEntries((kvs ?? []).map((kv) => [kv.key, value(kv.value)]));
const nanos = (v: unknown) => BigInt(String(v ?? 0));

export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly logs: ReceivedLog[] = [];
  /** Requests that did not decode, or came with another content type: each a test failure waiting to be seen. */
  readonly refused: string[] = [];
  /** Requests received, by path. */
  readonly posts = new Map<string, number>();
  private server?: Server;
  /** Answer every request with this status (e.g. 503 to test an exporter's retries); undefined: 200. */
  failWith?: number;

  async start(host = '127.0.0.1', port = 0): Promise<{ host: string; port: number; url: string }> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > 16 << 20) req.destroy(); // bounded: a test receiver never holds more
        else chunks.push(c);
      });
      req.on('end', () => {
        const path = (req.url ?? '').split('?')[0]!;
        this.posts.set(path, (this.posts.get(path) ?? 0) + 1);
        if (this.failWith) return void res.writeHead(this.failWith).end();
        const body = Buffer.concat(chunks);
        if (req.method !== 'POST' || !String(req.headers['content-type']).startsWith('application/x-protobuf')) {
          this.refused.push(`${req.method} ${path} ${String(req.headers['content-type'])}`);
          return void res.writeHead(415).end();
        }
        try {
          if (path === '/v1/traces') this.takeTraces(body);
          else if (path === '/v1/logs') this.takeLogs(body);
          else return void res.writeHead(404).end();
        } catch (e) {
          this.refused.push(`${path}: ${(e as Error).message}`);
          return void res.writeHead(400).end();
        }
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(port, host, resolve));
    const a = this.server.address() as AddressInfo;
    return { host: a.address, port: a.port, url: `http://${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` };
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** Takes bodies stored elsewhere (the lab's collector pod writes `<path> <base64>` lines). */
  takeLines(text: string): void {
    for (const line of text.split('\n')) {
      const [path, b64] = line.split(' ');
      if (!path || b64 === undefined) continue;
      const body = Buffer.from(b64, 'base64');
      if (path === '/v1/traces') this.takeTraces(body);
      else if (path === '/v1/logs') this.takeLogs(body);
    }
  }

  private takeTraces(body: Buffer): void {
    const m = TRACES.toObject(TRACES.decode(body), { longs: String, bytes: Uint8Array as unknown as StringConstructor }) as {
      resourceSpans?: { resource?: { attributes?: KV[] }; scopeSpans?: { spans?: Record<string, unknown>[] }[] }[];
    };
    for (const rs of m.resourceSpans ?? []) {
      const resource = attrs(rs.resource?.attributes);
      for (const ss of rs.scopeSpans ?? [])
        for (const s of ss.spans ?? []) {
          const status = (s.status ?? {}) as { code?: number; message?: string };
          this.spans.push({
            traceId: hex(s.traceId as Uint8Array),
            spanId: hex(s.spanId as Uint8Array),
            parentSpanId: hex(s.parentSpanId as Uint8Array),
            traceState: String(s.traceState ?? ''),
            name: String(s.name ?? ''),
            kind: Number(s.kind ?? 0),
            startNs: nanos(s.startTimeUnixNano),
            endNs: nanos(s.endTimeUnixNano),
            attributes: attrs(s.attributes as KV[]),
            resource,
            status: { code: status.code ?? 0, message: status.message ?? '' },
          });
        }
    }
  }

  private takeLogs(body: Buffer): void {
    const m = LOGS.toObject(LOGS.decode(body), { longs: String, bytes: Uint8Array as unknown as StringConstructor }) as {
      resourceLogs?: { resource?: { attributes?: KV[] }; scopeLogs?: { logRecords?: Record<string, unknown>[] }[] }[];
    };
    for (const rl of m.resourceLogs ?? []) {
      const resource = attrs(rl.resource?.attributes);
      for (const sl of rl.scopeLogs ?? [])
        for (const r of sl.logRecords ?? [])
          this.logs.push({
            timeNs: nanos(r.timeUnixNano),
            severityNumber: Number(r.severityNumber ?? 0),
            severityText: String(r.severityText ?? ''),
            body: value(r.body as Any),
            attributes: attrs(r.attributes as KV[]),
            resource,
            traceId: hex(r.traceId as Uint8Array),
            spanId: hex(r.spanId as Uint8Array),
          });
    }
  }
}
