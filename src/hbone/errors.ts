// One error type for failed HBONE connects, so the caller can count and log by kind:
// `tls` → TLS_FAILURE, `status` 401 → DENY, `status` 503 / `dial` → CONNECT, and so on.
export type HboneFailure = 'dial' | 'tls' | 'timeout' | 'status' | 'stream' | 'closed';

export class HboneError extends Error {
  override readonly name = 'HboneError';
  constructor(
    readonly kind: HboneFailure,
    message: string,
    /** The response status when kind is `status`. */
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A stream the session never started (refused, or the session takes no more): another session may. */
export class StreamRefused extends HboneError {}
