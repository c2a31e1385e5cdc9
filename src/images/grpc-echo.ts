// Built-in image `weft/grpc-echo`: a gRPC server (plaintext HTTP/2; the mesh adds mTLS) that says
// which pod answered, fails with the status a caller asks for, and streams. Port from $PORT
// (default 9090). The service is in echo.proto next to this file.
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

export const ECHO_PROTO = join(import.meta.dirname, 'echo.proto');
const port = Number(process.env.PORT ?? 9090);
const pod = process.env.POD_NAME ?? process.env.HOSTNAME ?? 'unknown';

type Unary<Req> = grpc.handleUnaryCall<Req, { pod: string; message: string }>;
const pkg = grpc.loadPackageDefinition(loadSync(ECHO_PROTO, { keepCase: true, defaults: true })) as unknown as {
  weft: { echo: { v1: { Echo: grpc.ServiceClientConstructor } } };
};
const say: Unary<{ message: string }> = (call, cb) => cb(null, { pod, message: call.request.message });
const fail: Unary<{ code: number; message: string }> = (call, cb) => {
  const { code, message } = call.request;
  if (!code) return cb(null, { pod, message });
  cb({ code: Math.min(16, Math.max(1, code)), details: message, metadata: new grpc.Metadata() });
};
const count: grpc.handleServerStreamingCall<{ n: number }, { pod: string; message: string }> = (call) => {
  const n = Math.min(1000, Math.max(0, call.request.n));
  for (let i = 0; i < n; i++) call.write({ pod, message: String(i) });
  call.end();
};

const server = new grpc.Server();
server.addService(pkg.weft.echo.v1.Echo.service, { Say: say, Version: say, Fail: fail, Count: count });
server.bindAsync(`0.0.0.0:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    console.error(JSON.stringify({ msg: 'grpc-echo failed to listen', err: err.message }));
    process.exit(1);
  }
  console.log(JSON.stringify({ msg: 'grpc-echo listening', port, pod }));
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
