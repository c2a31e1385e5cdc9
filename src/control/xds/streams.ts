// The lifecycle every ADS stream shares, whatever its variant (Delta or State of the World):
// authorize before the first request is read, track the stream while it lives, report connects
// and disconnects once each. A caller may be scoped to some type URLs (a workload credential: Envoy
// config, not the workload API): the first request for any other type ends the stream with
// PERMISSION_DENIED naming the type, before anything of that type is read or sent (fail closed:
// a stream that merely got nothing would leave the client waiting, and hide the refusal). A
// request the stream throws on (a StreamError: over a limit) ends that stream with its status.
import * as grpc from '@grpc/grpc-js';
import { StreamError } from './subscriptions.ts';

export interface AdsStream<Req> {
  node: string;
  onRequest(req: Req): void;
  /** The call ended (cleanly, with an error or cancelled); called once. */
  onClose?(): void;
}

/** An authorized caller limited to some types. */
export interface ScopedCaller {
  /** Who the credential names, for errors: "workload shop/waypoint". */
  who: string;
  /** The type URLs the caller may ask for; any other ends the stream. */
  types: ReadonlySet<string>;
  /** Why the scope is what it is, appended to the refusal's message. */
  why?: string;
  /** Called once, when the caller asks for a type outside `types` (to log and count it). */
  onDenied?(typeUrl: string, message: string): void;
}

/**
 * Resolves to who the caller is (a name: every type; a ScopedCaller: only its types), or
 * undefined after ending the call itself.
 */
export type Authorize = (call: grpc.ServerDuplexStream<never, unknown>) => Promise<string | ScopedCaller | undefined>;

export class StreamSet<S extends AdsStream<Req>, Req extends { typeUrl?: string | null }> {
  readonly streams = new Set<S>();
  private readonly calls = new Map<S, grpc.ServerDuplexStream<Req, unknown>>();
  /** Set by drain(): streams authorized from now on are ended at once. */
  private draining?: { message: string };

  /**
   * Ends every stream with UNAVAILABLE, each at a random moment within `spreadMs`, so the clients
   * of a draining replica reconnect (elsewhere) spread out rather than all in the same
   * millisecond; streams authorized meanwhile are ended at once. Resolves when all have ended.
   */
  drain(spreadMs: number, message = 'control plane replica shutting down; reconnect'): Promise<void> {
    this.draining = { message };
    const ends = [...this.calls].map(
      ([stream, call]) =>
        new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            this.end(call);
            resolve();
          }, Math.random() * spreadMs);
          // Gone by itself first (the client left): nothing to end.
          const gone = () => {
            clearTimeout(t);
            resolve();
          };
          if (!this.calls.has(stream)) gone();
          else this.onGone.set(stream, gone);
        }),
    );
    return Promise.all(ends).then(() => undefined);
  }

  private readonly onGone = new Map<S, () => void>();

  private end(call: grpc.ServerDuplexStream<Req, unknown>): void {
    // An 'error' event is how grpc-js ends a server stream with a status (see the handler below).
    call.emit('error', Object.assign(new Error(this.draining?.message ?? 'shutting down'), { code: grpc.status.UNAVAILABLE }));
  }

  constructor(private readonly onConnect?: (node: string, connected: number) => void) {}

  /** A grpc handler that makes a stream per call and feeds it the call's requests. */
  handler(make: (call: grpc.ServerDuplexStream<Req, unknown>) => S, authorize?: Authorize) {
    return (call: grpc.ServerDuplexStream<Req, unknown>) => {
      const stream = make(call);
      const ready = authorize ? authorize(call as unknown as grpc.ServerDuplexStream<never, unknown>) : Promise.resolve('');
      ready.then(
        (who) => {
          if (who === undefined) return;
          if (this.draining || closed) {
            if (!closed) this.end(call);
            return;
          }
          this.streams.add(stream);
          this.calls.set(stream, call);
          this.onConnect?.(stream.node, this.streams.size);
          const scope = typeof who === 'string' ? undefined : who;
          let denied = false;
          call.on('data', (req: Req) => {
            if (denied) return;
            const typeUrl = req.typeUrl ?? '';
            if (scope && !scope.types.has(typeUrl)) {
              denied = true;
              const message = `${scope.who} may not subscribe to ${typeUrl ? `type ${typeUrl}` : 'an empty type URL'}${scope.why ? `: ${scope.why}` : ''}`;
              scope.onDenied?.(typeUrl, message);
              call.emit('error', Object.assign(new Error(message), { code: grpc.status.PERMISSION_DENIED }));
              return;
            }
            try {
              stream.onRequest(req);
            } catch (e) {
              // A request the stream refuses (over a limit) or cannot handle ends that stream only.
              denied = true;
              const code = e instanceof StreamError ? e.code : grpc.status.INTERNAL;
              call.emit('error', Object.assign(new Error((e as Error).message), { code }));
            }
          });
        },
        () => call.end(),
      );
      let closed = false;
      const done = () => {
        if (this.streams.delete(stream)) this.onConnect?.(stream.node, this.streams.size);
        this.calls.delete(stream);
        this.onGone.get(stream)?.();
        this.onGone.delete(stream);
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
