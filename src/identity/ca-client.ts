// A client for IstioCertificateService over TLS, authenticated by a bearer token, in one of two
// modes, as in Istio: the node agent asks with its node credential for the identities of the pods
// on its node (ImpersonatedIdentity, ztunnel's way); a workload (the waypoint) asks with its own
// service account's token for its own identity, naming it only in the CSR (istio-agent's way).
//
// The one method is defined with protobufjs, which the agent already carries for xDS
// (src/api/protos.ts), not with @grpc/proto-loader as the control plane's server is: the loader
// brings its own second copy of protobufjs with the .proto parser, ~1 MB of heap the agent would
// keep for one call a day per identity. Nothing at run time comes from ../api/ca.ts.
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import type { IstioCertificateRequest, IstioCertificateResponse } from '../api/ca.ts';
import { rootPath } from '../util/paths.ts';

/** The metadata key naming the identity asked for (ztunnel's; IMPERSONATED_IDENTITY in src/api/ca.ts). */
export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';
const METHOD = '/istio.v1.auth.IstioCertificateService/CreateCertificate';

let codec: { serialize: (r: IstioCertificateRequest) => Buffer; deserialize: (b: Buffer) => IstioCertificateResponse } | undefined;
/** Request and response codecs from proto/istio/ca/ca.proto, as proto-loader would convert them. */
function createCertificateCodec(): NonNullable<typeof codec> {
  if (!codec) {
    const root = new protobuf.Root().loadSync(rootPath('proto', 'istio', 'ca', 'ca.proto'), { keepCase: true });
    const req = root.lookupType('istio.v1.auth.IstioCertificateRequest');
    const res = root.lookupType('istio.v1.auth.IstioCertificateResponse');
    codec = {
      serialize: (r) => {
        const out = req.encode(req.fromObject(r)).finish();
        return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
      },
      deserialize: (b) => res.toObject(res.decode(b), { longs: Number, defaults: true, oneofs: true }) as IstioCertificateResponse,
    };
  }
  return codec;
}

export interface CAClientOptions {
  /** host:port of the control plane's TLS port (15012). */
  address: string;
  /** Mesh root(s) the server certificate must chain to; a function is called per request so a rotated root is picked up. */
  rootPem: string | (() => string);
  /** Name the server certificate must carry, e.g. weft-control.istio-system.svc. */
  serverName: string;
  /**
   * This node's credential (the node agent): each request names the identity it is for in
   * ImpersonatedIdentity. A function is called per request so a rotated token is picked up.
   */
  nodeToken?: TokenSource;
  /**
   * The workload's own credential (its projected service-account token, audience istio-ca), for
   * its own identity only: no ImpersonatedIdentity is sent. Exactly one of nodeToken and
   * workloadToken. A function is called per request so a rotated token is picked up.
   */
  workloadToken?: TokenSource;
  timeoutMs?: number;
}

export type TokenSource = string | (() => string | Promise<string>);

/** Which credential the options give; throws unless exactly one. */
export function caClientMode(o: Pick<CAClientOptions, 'nodeToken' | 'workloadToken'>): 'node' | 'workload' {
  if ((o.nodeToken === undefined) === (o.workloadToken === undefined)) {
    throw new Error('CA client: give exactly one of nodeToken (a node agent) and workloadToken (a workload asking for its own identity)');
  }
  return o.nodeToken !== undefined ? 'node' : 'workload';
}

export class CAClient {
  private client?: { rootPem: string; grpc: grpc.Client };

  readonly mode: 'node' | 'workload';

  constructor(private readonly o: CAClientOptions) {
    this.mode = caClientMode(o);
  }

  /** A channel trusting the current root: a new one once the root changed. */
  private channel(): grpc.Client {
    const rootPem = typeof this.o.rootPem === 'function' ? this.o.rootPem() : this.o.rootPem;
    if (this.client?.rootPem === rootPem) return this.client.grpc;
    this.client?.grpc.close();
    const c = new grpc.Client(this.o.address, grpc.credentials.createSsl(Buffer.from(rootPem)), {
      'grpc.ssl_target_name_override': this.o.serverName,
      'grpc.default_authority': this.o.serverName,
    });
    this.client = { rootPem, grpc: c };
    return c;
  }

  /**
   * The PEM chain the CA returned (leaf first), unverified. `identity` is sent as
   * ImpersonatedIdentity in node mode; in workload mode the CSR alone names it.
   */
  async createCertificate(csrPem: string, identity: string, ttlSeconds: number): Promise<string[]> {
    const source = (this.mode === 'node' ? this.o.nodeToken : this.o.workloadToken)!;
    const token = typeof source === 'function' ? await source() : source;
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    const req: IstioCertificateRequest = {
      csr: csrPem,
      validity_duration: ttlSeconds,
      ...(this.mode === 'node' ? { metadata: { fields: { [IMPERSONATED_IDENTITY]: { stringValue: identity } } } } : {}),
    };
    const deadline = Date.now() + (this.o.timeoutMs ?? 10_000);
    const client = this.channel();
    return new Promise((resolve, reject) => {
      const { serialize, deserialize } = createCertificateCodec();
      client.makeUnaryRequest(METHOD, serialize, deserialize, req, md, { deadline }, (err, res) => {
        if (err) {
          // Unreachable: start over next time, not after grpc-js's own backoff (up to 2 minutes).
          if (err.code === grpc.status.UNAVAILABLE && this.client?.grpc === client) this.close();
          reject(err);
        } else resolve(res?.cert_chain ?? []);
      });
    });
  }

  close(): void {
    this.client?.grpc.close();
    this.client = undefined;
  }
}
