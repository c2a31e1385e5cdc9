// Listeners for the control plane's ports. Normally grpc-js binds its own; with --reuse-port every
// listening socket is made with SO_REUSEPORT (Node 20's net has no such option, so the socket
// comes from the native addon) and grpc-js is handed its connections through a connection
// injector. Two replicas on one host and address can then listen at once, which is how the lab
// rolls its control plane: the new replica binds beside the old one, and once the old one closes
// its listener every new connection reaches the new one. Both must set the option (the kernel
// refuses a second bind otherwise), and both run as the same user. Any process of that user in
// the namespace could bind beside them and take a share of the connections: it could refuse them,
// not impersonate the control plane (clients check its certificate against the mesh root), which
// is why only the lab uses it and `weft install` does not.
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import type * as grpc from '@grpc/grpc-js';

/** "host:port" or "[v6]:port" -> host and port; a clear error for anything else. */
export function splitAddress(address: string, flag: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(address);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !m[1] || !(port >= 0 && port <= 65535)) throw new Error(`${flag} ${address}: expected host:port (or [v6]:port)`);
  return { host: m[1], port };
}

async function reusePortFd(address: string, flag: string): Promise<number> {
  const { host, port } = splitAddress(address, flag);
  const { listenerInNetns } = await import('../bpf/netns.ts'); // the native addon, only when asked for
  try {
    return listenerInNetns(null, host, port, { reusePort: true, family: host.includes(':') ? 6 : 4 });
  } catch (e) {
    throw new Error(`cannot listen on ${address} (${flag}, SO_REUSEPORT): ${(e as Error).message}`, { cause: e });
  }
}

export interface Listener {
  /** Stops accepting connections; those accepted stay up. */
  close(): void;
}

/** grpc-js serves `address`: bound by itself, or over an SO_REUSEPORT socket of ours. */
export async function listenGrpc(server: grpc.Server, address: string, creds: grpc.ServerCredentials, flag: string, reusePort: boolean): Promise<Listener> {
  if (!reusePort) {
    await new Promise<number>((resolve, reject) => server.bindAsync(address, creds, (e, port) => (e ? reject(new Error(`cannot listen on ${address} (${flag}): ${e.message}`)) : resolve(port))));
    return { close: () => {} }; // grpc-js closes its own listeners in tryShutdown
  }
  const fd = await reusePortFd(address, flag);
  const injector = server.createConnectionInjector(creds);
  const net: NetServer = createNetServer((socket) => injector.injectConnection(socket));
  await new Promise<void>((resolve, reject) => net.once('error', reject).listen({ fd }, resolve));
  return { close: () => net.close() };
}

/** An HTTP server on `address`, with SO_REUSEPORT when asked. */
export async function listenHttp(handler: RequestListener, address: string, flag: string, reusePort: boolean): Promise<HttpServer> {
  const server = createHttpServer(handler);
  const where = reusePort ? { fd: await reusePortFd(address, flag) } : (({ host, port }) => ({ host, port }))(splitAddress(address, flag));
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(where, resolve));
  return server;
}
