// Loads proto/istio/ca/ca.proto: the IstioCertificateService definition for servers and clients.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { rootPath } from '../util/paths.ts';

const PROTO = rootPath('proto', 'istio', 'ca', 'ca.proto');

export interface StructValue {
  stringValue?: string;
}

export interface IstioCertificateRequest {
  csr: string;
  /** Seconds. */
  validity_duration: number;
  metadata?: { fields?: Record<string, StructValue> } | null;
}

export interface IstioCertificateResponse {
  cert_chain: string[];
}

export const IMPERSONATED_IDENTITY = 'ImpersonatedIdentity';

let cached: grpc.ServiceClientConstructor | undefined;

/** The generated client constructor; its `.service` is the definition servers register. */
export function caServiceClient(): grpc.ServiceClientConstructor {
  if (!cached) {
    const def = protoLoader.loadSync(PROTO, { keepCase: true, longs: Number, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      istio: { v1: { auth: { IstioCertificateService: grpc.ServiceClientConstructor } } };
    };
    cached = pkg.istio.v1.auth.IstioCertificateService;
  }
  return cached;
}
