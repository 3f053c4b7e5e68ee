/**
 * Errors with stable codes. A client sees `{ code, message }`, never a stack.
 * Codes are a closed union so that the client library can switch on them.
 */
export type ErrorCode =
  | 'BAD_REQUEST'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'TOO_MANY_REQUESTS'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'IMAGE_TOO_LARGE'
  | 'IMAGE_TOO_SMALL'
  | 'CONSENT_REQUIRED'
  | 'NO_FACE'
  | 'TOKEN_INVALID'
  | 'TOKEN_EXPIRED'
  | 'FORBIDDEN'
  | 'ROOM_NOT_FOUND'
  | 'ROOM_BUSY'
  | 'ALREADY_PUBLISHING'
  | 'INVALID_MESSAGE'
  | 'INVALID_SDP'
  | 'INVALID_STATE'
  | 'MODEL_PACK_INVALID'
  | 'FACE_MODEL_INVALID'
  | 'CONFIG_INVALID'
  | 'ENGINE_FAILED'
  | 'UNSUPPORTED'
  | 'API_KEY_REQUIRED'
  | 'API_KEY_INVALID'
  | 'TOKEN_REVOKED'
  | 'WRONG_NODE'
  | 'ROOM_OWNER_LOST'
  | 'SFU_RESET'
  | 'SIGNING_KEY_INVALID'
  | 'MANIFEST_INVALID'
  | 'ORIGIN_REFUSED'
  | 'REQUEST_STALE'
  | 'REQUEST_REPLAYED'
  | 'QUOTA_EXCEEDED'
  | 'VIEWER_LIMIT'
  | 'JOIN_TIMEOUT'
  | 'INTERNAL';

/** HTTP status for each code, for the REST API. */
export const httpStatus: Record<ErrorCode, number> = {
  BAD_REQUEST: 400,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  TOO_MANY_REQUESTS: 429,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  IMAGE_TOO_LARGE: 413,
  IMAGE_TOO_SMALL: 422,
  CONSENT_REQUIRED: 422,
  NO_FACE: 422,
  TOKEN_INVALID: 401,
  TOKEN_EXPIRED: 401,
  FORBIDDEN: 403,
  ROOM_NOT_FOUND: 404,
  ROOM_BUSY: 409,
  ALREADY_PUBLISHING: 409,
  INVALID_MESSAGE: 400,
  INVALID_SDP: 400,
  INVALID_STATE: 409,
  MODEL_PACK_INVALID: 500,
  FACE_MODEL_INVALID: 500,
  CONFIG_INVALID: 500,
  ENGINE_FAILED: 500,
  UNSUPPORTED: 501,
  /** A management call without `Authorization: Bearer <API key>`. */
  API_KEY_REQUIRED: 401,
  /** A key that is not configured. */
  API_KEY_INVALID: 401,
  /** A room link whose links were revoked by the room's owner. */
  TOKEN_REVOKED: 401,
  /** The room lives on another node of the cluster (the message names it; the client connects there). */
  WRONG_NODE: 421,
  /** The node that owned the room stopped answering (its directory entry expired). */
  ROOM_OWNER_LOST: 503,
  /** The SFU router a viewer consumed from went away (a worker died); the viewer consumes again. */
  SFU_RESET: 503,
  /** The server's provenance signing key cannot be used (server/provenance/keys.ts). */
  SIGNING_KEY_INVALID: 500,
  /** A provenance manifest that is not one (malformed JSON, wrong format): its signature cannot even be checked. */
  MANIFEST_INVALID: 422,
  /** A cookie-authenticated change (or the studio sign-in) from a page of another origin, or without an Origin. */
  ORIGIN_REFUSED: 403,
  /** A node-to-node request too old, or dated in the future beyond the allowed clock skew. */
  REQUEST_STALE: 401,
  /** A node-to-node request whose nonce was already used (a replay). */
  REQUEST_REPLAYED: 401,
  /** An API key's quota (config.quotas: rooms open, portraits or bytes stored) is used up; the message names it. */
  QUOTA_EXCEEDED: 403,
  /** A room, or the link (token) used, already has its most viewers (config.quotas.viewersPerRoom / viewersPerLink). */
  VIEWER_LIMIT: 409,
  /** A socket that did not join a room within config.signaling.joinTimeoutMs (sent as a 'failure', then dropped). */
  JOIN_TIMEOUT: 408,
  INTERNAL: 500,
};

/** An error whose code and message may be shown to a client. */
export class AppError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AppError';
    this.code = code;
  }
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Too many requests from one key or address: the HTTP reply carries Retry-After. */
export class RateLimitError extends AppError {
  readonly retryAfterS: number;
  constructor(message: string, retryAfterS: number) {
    super('TOO_MANY_REQUESTS', message);
    this.name = 'RateLimitError';
    this.retryAfterS = Math.max(1, Math.ceil(retryAfterS));
  }
}

/** The object was used after close() or before it was ready. */
export class InvalidStateError extends AppError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_STATE', message, options);
    this.name = 'InvalidStateError';
  }
}

/** A model pack failed validation; names the pack and the file. */
export class ModelPackError extends AppError {
  readonly pack: string;
  readonly file: string | undefined;
  constructor(pack: string, file: string | undefined, message: string, options?: { cause?: unknown }) {
    super('MODEL_PACK_INVALID', `model pack "${pack}"${file ? `, file "${file}"` : ''}: ${message}`, options);
    this.name = 'ModelPackError';
    this.pack = pack;
    this.file = file;
  }
}

/** Maps anything thrown to what a client may see. Unknown errors become INTERNAL without details. */
export function toPublicError(err: unknown): { code: ErrorCode; message: string } {
  if (err instanceof AppError) return err.toJSON();
  return { code: 'INTERNAL', message: 'internal error' };
}
