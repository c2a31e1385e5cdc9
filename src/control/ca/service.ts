// istio.v1.auth.IstioCertificateService/CreateCertificate, called two ways, as in Istio:
// - a node agent (ztunnel's way) authenticates with its own bearer token and names the workload
//   identity it wants in the ImpersonatedIdentity metadata field; the CA signs only identities
//   scheduled on that node;
// - a workload (a waypoint; an Istio sidecar's istio-agent) sends no ImpersonatedIdentity and
//   authenticates with its own service account's token; it gets that service account's identity
//   and nothing else: the CSR must name exactly it.
// A node credential never stands for a workload (no impersonation: refused), and a workload
// credential never impersonates.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { formatSpiffe, parseSpiffe, type SpiffeId } from '../../api/spiffe.ts';
import type { NodeAuthenticator, ServiceAccountRef, WorkloadAuthenticator } from './authenticator.ts';
import { CsrError, CsrIdentityError, type CertificateAuthority } from './authority.ts';
import {
  IMPERSONATED_IDENTITY,
  caServiceClient,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../../api/ca.ts';

export interface CAServiceOptions {
  ca: CertificateAuthority;
  authenticator: NodeAuthenticator;
  /** Workloads asking for their own identity; without it every request must come from a node agent. */
  workloads?: WorkloadAuthenticator;
  /** True when a pod with this namespace/service account is scheduled on the node. */
  canIssue: (node: string, identity: SpiffeId) => boolean | Promise<boolean>;
  log: Logger;
  /** Called once per request with its outcome, for metrics. */
  onResult?: (r: CAResult) => void;
}

export interface CAResult {
  code: grpc.status;
  /** Who asked, once known: a node agent for a workload on it, or a workload for itself. */
  caller?: 'node' | 'workload';
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
    // Empty is absent, as istiod reads it: no identity named, so no impersonation.
    const uri = call.request.metadata?.fields?.[IMPERSONATED_IDENTITY]?.stringValue;
    let node: string | undefined;
    try {
      node = await o.authenticator.authenticate(token);
    } catch (e) {
      throw new Refusal(grpc.status.UNAVAILABLE, `authenticator failed: ${(e as Error).message}`);
    }
    if (!node) {
      if (o.workloads) return workload(call, token, uri, o.workloads, r);
      throw new Refusal(grpc.status.UNAUTHENTICATED, 'unknown token');
    }
    r.caller = 'node';
    r.node = node;

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
    return sign(call.request, id, false);
  };

  /** Not a node credential: a workload's own, for its own identity only. */
  const workload = async (
    call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
    token: string,
    uri: string | undefined,
    workloads: WorkloadAuthenticator,
    r: CAResult,
  ) => {
    let sa: ServiceAccountRef | undefined;
    try {
      sa = await workloads.authenticate(token);
    } catch (e) {
      throw new Refusal(grpc.status.UNAVAILABLE, `authenticator failed: ${(e as Error).message}`);
    }
    if (!sa) throw new Refusal(grpc.status.UNAUTHENTICATED, 'unknown token');
    r.caller = 'workload';
    const id: SpiffeId = { trustDomain: o.ca.trustDomain, namespace: sa.namespace, serviceAccount: sa.serviceAccount };
    r.identity = formatSpiffe(id);
    if (uri) {
      throw new Refusal(grpc.status.PERMISSION_DENIED, `a workload credential asks for its own identity only; ${IMPERSONATED_IDENTITY} is for node agents`);
    }
    return sign(call.request, id, true);
  };

  const sign = async (req: IstioCertificateRequest, id: SpiffeId, csrMustName: boolean) => {
    try {
      return await o.ca.signWorkload(req.csr, id, req.validity_duration, { csrMustName });
    } catch (e) {
      if (e instanceof CsrError) throw new Refusal(grpc.status.INVALID_ARGUMENT, e.message);
      if (e instanceof CsrIdentityError) throw new Refusal(grpc.status.PERMISSION_DENIED, e.message);
      throw e;
    }
  };

  const createCertificate: grpc.handleUnaryCall<IstioCertificateRequest, IstioCertificateResponse> = (call, cb) => {
    const r: CAResult = { code: grpc.status.OK };
    const peer = call.getPeer();
    handle(call, r).then(
      (chain) => {
        counters.issued++;
        log.info({ peer, caller: r.caller, node: r.node, identity: r.identity, ttl: call.request.validity_duration }, 'certificate issued');
        o.onResult?.(r);
        cb(null, { cert_chain: chain });
      },
      (e: unknown) => {
        const refusal = e instanceof Refusal;
        r.code = refusal ? e.code : grpc.status.INTERNAL;
        r.reason = (e as Error).message;
        const name = grpc.status[r.code];
        counters.refused[name] = (counters.refused[name] ?? 0) + 1;
        log.warn({ peer, caller: r.caller, node: r.node, identity: r.identity, reason: r.reason, code: name }, 'certificate refused');
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
  // Node agents and workloads authenticate with bearer tokens, not client certificates.
  return grpc.ServerCredentials.createSsl(
    null,
    [{ private_key: Buffer.from(kp.keyPem), cert_chain: Buffer.from(kp.certChainPem) }],
    false,
  );
}
