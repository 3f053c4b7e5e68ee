/**
 * The one error type the client library throws for server-side refusals. `code` is the server's stable code
 * (server/errors.ts), so pages switch on it; the library adds a few client-side codes of its own.
 */
import type { ErrorCode } from '../../server/errors.js';

/** Codes that only the client produces: the network failed, a request timed out, or the client was closed. */
export type ClientOnlyCode = 'NETWORK' | 'TIMEOUT' | 'CLOSED' | 'MEDIA';
export type ClientErrorCode = ErrorCode | ClientOnlyCode;

export class ClientError extends Error {
  readonly code: ClientErrorCode;
  /** HTTP status for REST errors; undefined for socket errors. */
  readonly status: number | undefined;
  constructor(code: ClientErrorCode, message: string, options?: { cause?: unknown; status?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ClientError';
    this.code = code;
    this.status = options?.status;
  }
}

/** Errors after which retrying with the same token cannot succeed (a revoked link stays revoked). */
export function isTerminal(err: unknown): boolean {
  if (!(err instanceof ClientError)) return false;
  return (
    err.code === 'TOKEN_INVALID' ||
    err.code === 'TOKEN_EXPIRED' ||
    err.code === 'TOKEN_REVOKED' ||
    err.code === 'FORBIDDEN' ||
    err.code === 'CLOSED'
  );
}

/** Wraps anything thrown into a ClientError (keeps ClientErrors as they are). */
export function toClientError(err: unknown, fallback: ClientErrorCode = 'INTERNAL'): ClientError {
  if (err instanceof ClientError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new ClientError(fallback, message, { cause: err });
}
