// The node agent's client for IstioCertificateService over TLS, authenticated by the node token.
import * as grpc from '@grpc/grpc-js';
import {
  IMPERSONATED_IDENTITY,
  caServiceClient,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../../control/ca/proto.ts';

export interface CAClientOptions {
  /** host:port of the control plane's TLS port (15012). */
  address: string;
  /** Mesh root(s) the server certificate must chain to. */
  rootPem: string;
  /** Name the server certificate must carry, e.g. weft-control.istio-system.svc. */
  serverName: string;
  /** This node's credential; a function is called per request so a rotated token is picked up. */
  nodeToken: string | (() => string | Promise<string>);
  timeoutMs?: number;
}

interface RawClient extends grpc.Client {
  CreateCertificate(
    req: IstioCertificateRequest,
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: IstioCertificateResponse) => void,
  ): grpc.ClientUnaryCall;
}

export class CAClient {
  private readonly client: RawClient;

  constructor(private readonly o: CAClientOptions) {
    const Client = caServiceClient();
    this.client = new Client(o.address, grpc.credentials.createSsl(Buffer.from(o.rootPem)), {
      'grpc.ssl_target_name_override': o.serverName,
      'grpc.default_authority': o.serverName,
    }) as unknown as RawClient;
  }

  /** The PEM chain the CA returned (leaf first), unverified. */
  async createCertificate(csrPem: string, identity: string, ttlSeconds: number): Promise<string[]> {
    const token = typeof this.o.nodeToken === 'function' ? await this.o.nodeToken() : this.o.nodeToken;
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    const req: IstioCertificateRequest = {
      csr: csrPem,
      validity_duration: ttlSeconds,
      metadata: { fields: { [IMPERSONATED_IDENTITY]: { stringValue: identity } } },
    };
    const deadline = Date.now() + (this.o.timeoutMs ?? 10_000);
    return new Promise((resolve, reject) => {
      this.client.CreateCertificate(req, md, { deadline }, (err, res) => {
        if (err) reject(err);
        else resolve(res?.cert_chain ?? []);
      });
    });
  }

  close(): void {
    this.client.close();
  }
}
