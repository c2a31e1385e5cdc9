// istio.v1.auth.IstioCertificateService/CreateCertificate, as ztunnel calls it: the node agent
// authenticates with its own bearer token and names the workload identity it wants in the
// ImpersonatedIdentity metadata field; the CA signs only identities scheduled on that node.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { parseSpiffe, type SpiffeId } from '../../api/spiffe.ts';
import type { NodeAuthenticator } from './authenticator.ts';
import { CsrError, type CertificateAuthority } from './authority.ts';
import {
  IMPERSONATED_IDENTITY,
  caServiceClient,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../../api/ca.ts';

export interface CAServiceOptions {
  ca: CertificateAuthority;
  authenticator: NodeAuthenticator;
  /** True when a pod with this namespace/service account is scheduled on the node. */
  canIssue: (node: string, identity: SpiffeId) => boolean | Promise<boolean>;
  log: Logger;
  /** Called once per request with its outcome, for metrics. */
  onResult?: (r: CAResult) => void;
}

export interface CAResult {
  code: grpc.status;
  node?: string;
  identity?: string;
  reason?: string;
}

export interface CACounters {
  issued: number;
  /** Refusals by gRPC status name (UNAUTHENTICATED, PERMISSION_DENIED, ...). */
  refused: Record<string, number>;
}

class Refusal extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

const BEARER = /^Bearer\s+(\S+)$/i;

/** Adds the CA service to a server the caller owns (and binds, with TLS); returns live counters. */
export function registerCAService(server: grpc.Server, o: CAServiceOptions): CACounters {
  const counters: CACounters = { issued: 0, refused: {} };
  const log = o.log.child({ component: 'ca' });

  const handle = async (call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>, r: CAResult) => {
    const auth = call.metadata.get('authorization')[0];
    const token = typeof auth === 'string' ? BEARER.exec(auth)?.[1] : undefined;
    if (!token) throw new Refusal(grpc.status.UNAUTHENTICATED, 'no bearer token');
    let node: string | undefined;
    try {
      node = await o.authenticator.authenticate(token);
    } catch (e) {
      throw new Refusal(grpc.status.UNAVAILABLE, `authenticator failed: ${(e as Error).message}`);
    }
    if (!node) throw new Refusal(grpc.status.UNAUTHENTICATED, 'unknown token');
    r.node = node;

    const uri = call.request.metadata?.fields?.[IMPERSONATED_IDENTITY]?.stringValue;
    if (!uri) throw new Refusal(grpc.status.INVALID_ARGUMENT, `no ${IMPERSONATED_IDENTITY} in metadata`);
    r.identity = uri;
    const id = parseSpiffe(uri);
    if (!id) throw new Refusal(grpc.status.INVALID_ARGUMENT, 'identity is not a SPIFFE ns/sa URI');
    if (id.trustDomain !== o.ca.trustDomain) {
      throw new Refusal(grpc.status.PERMISSION_DENIED, `trust domain is not ${o.ca.trustDomain}`);
    }
    if (!(await o.canIssue(node, id))) {
      throw new Refusal(grpc.status.PERMISSION_DENIED, 'no pod with this identity is scheduled on the node');
    }
    try {
      return await o.ca.signWorkload(call.request.csr, id, call.request.validity_duration);
    } catch (e) {
      if (e instanceof CsrError) throw new Refusal(grpc.status.INVALID_ARGUMENT, e.message);
      throw e;
    }
  };

  const createCertificate: grpc.handleUnaryCall<IstioCertificateRequest, IstioCertificateResponse> = (call, cb) => {
    const r: CAResult = { code: grpc.status.OK };
    const peer = call.getPeer();
    handle(call, r).then(
      (chain) => {
        counters.issued++;
        log.info({ peer, node: r.node, identity: r.identity, ttl: call.request.validity_duration }, 'certificate issued');
        o.onResult?.(r);
        cb(null, { cert_chain: chain });
      },
      (e: unknown) => {
        const refusal = e instanceof Refusal;
        r.code = refusal ? e.code : grpc.status.INTERNAL;
        r.reason = (e as Error).message;
        const name = grpc.status[r.code];
        counters.refused[name] = (counters.refused[name] ?? 0) + 1;
        log.warn({ peer, node: r.node, identity: r.identity, reason: r.reason, code: name }, 'certificate refused');
        o.onResult?.(r);
        // Internal failures get a generic message: details stay in our log, not with the caller.
        cb({ code: r.code, details: refusal ? r.reason : 'internal CA error' });
      },
    );
  };

  server.addService(caServiceClient().service, { CreateCertificate: createCertificate });
  return counters;
}

/** gRPC TLS credentials for the control plane's port from a CA-issued server certificate. */
export function caServerCredentials(kp: { keyPem: string; certChainPem: string }): grpc.ServerCredentials {
  // Node agents authenticate with bearer tokens, not client certificates.
  return grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: Buffer.from(kp.keyPem), cert_chain: Buffer.from(kp.certChainPem) }],
    false,
  );
}
