// The fault filter's local answers to a real gRPC client over HTTP/2 (grpc-js): Envoy answers an
// aborted call trailers-only, one HEADERS frame with END_STREAM carrying grpc-status. A response
// whose status comes in headers followed by (empty) trailers is, to a gRPC client, a call that
// ended without a status (INTERNAL, "Call ended without gRPC status").
import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, ECHO_SERVICE, PROTO_VIP, frontDoor, istio, protoService, stand, webPod, webService } from './harness.ts';

const Echo = grpc.makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
type EchoClient = grpc.Client & { Unary(m: Buffer, cb: (e: grpc.ServiceError | null, r?: Buffer) => void): grpc.ClientUnaryCall };

const route = (fault: object) => istio('VirtualService', 'proto', { hosts: ['proto'], http: [{ name: 'faulty', match: [{ port: 9090 }], route: [{ destination: { host: 'proto', port: { number: 9090 } } }], fault }] });

describe('fault aborts to gRPC clients', () => {
  const cleanup = new Cleanup();
  afterEach(async () => cleanup.run());

  for (const [what, fault, code] of [
    ['a gRPC status abort', { abort: { grpcStatus: 'UNAVAILABLE', percentage: { value: 100 } } }, grpc.status.UNAVAILABLE],
    ['an HTTP status abort, mapped (403 -> PERMISSION_DENIED)', { abort: { httpStatus: 403, percentage: { value: 100 } } }, grpc.status.PERMISSION_DENIED],
  ] as const)
    it(`answers ${what} with the status the client reads`, async () => {
      const s = await stand(cleanup, [webService(), protoService(), webPod('v1'), route(fault)]);
      const port = await frontDoor(cleanup, s, `${PROTO_VIP}:9090`);
      const c = new Echo(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
      cleanup.add(() => c.close());
      const err = await new Promise<grpc.ServiceError | null>((r) => c.Unary(Buffer.from('hi'), (e) => r(e)));
      expect({ code: err?.code, details: err?.details }).toEqual({ code, details: 'fault filter abort' });
      expect([...s.v1.grpcSeen]).toEqual([]);
    });
});
