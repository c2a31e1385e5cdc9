// The lifecycle every ADS stream shares, whatever its variant (Delta or State of the World):
// authorize before the first request is read, track the stream while it lives, report connects
// and disconnects once each.
import type * as grpc from '@grpc/grpc-js';

export interface AdsStream<Req> {
  node: string;
  onRequest(req: Req): void;
  /** The call ended (cleanly, with an error or cancelled); called once. */
  onClose?(): void;
}

/** Resolves to who the caller is, or undefined after ending the call itself. */
export type Authorize = (call: grpc.ServerDuplexStream<never, unknown>) => Promise<string | undefined>;

export class StreamSet<S extends AdsStream<Req>, Req> {
  readonly streams = new Set<S>();

  constructor(private readonly onConnect?: (node: string, connected: number) => void) {}

  /** A grpc handler that makes a stream per call and feeds it the call's requests. */
  handler(make: (call: grpc.ServerDuplexStream<Req, unknown>) => S, authorize?: Authorize) {
    return (call: grpc.ServerDuplexStream<Req, unknown>) => {
      const stream = make(call);
      const ready = authorize ? authorize(call as unknown as grpc.ServerDuplexStream<never, unknown>) : Promise.resolve('');
      ready.then(
        (who) => {
          if (who === undefined) return;
          this.streams.add(stream);
          this.onConnect?.(stream.node, this.streams.size);
          call.on('data', (req: Req) => stream.onRequest(req));
        },
        () => call.end(),
      );
      let closed = false;
      const done = () => {
        if (this.streams.delete(stream)) this.onConnect?.(stream.node, this.streams.size);
        if (!closed) stream.onClose?.();
        closed = true;
      };
      call.on('end', () => {
        done();
        call.end();
      });
      call.on('error', done);
      call.on('cancelled', done);
    };
  }
}
