/** Stable error codes, each with its HTTP status. */
export const ERROR_STATUS = {
  ERR_BAD_JSON: 400,
  /** Binary tensor data (Inference-Header-Content-Length, binary_data_size) that does not add up. */
  ERR_BAD_BINARY: 400,
  /** A compressed body that does not decompress. */
  ERR_BAD_ENCODING: 400,
  ERR_VALIDATION: 422,
  ERR_CONTENT_TYPE: 415,
  ERR_CONTENT_ENCODING: 415,
  ERR_BODY_TOO_LARGE: 413,
  ERR_TOO_MANY_ROWS: 413,
  ERR_MODEL_NOT_FOUND: 404,
  ERR_MODEL_AMBIGUOUS: 422,
  ERR_VERSION_NOT_FOUND: 404,
  ERR_NOT_FOUND: 404,
  /** GET /models/{name}/shadow for a model with no shadow version set. */
  ERR_NO_SHADOW: 404,
  ERR_METHOD_NOT_ALLOWED: 405,
  ERR_FEATURE_MISSING: 422,
  ERR_FEATURE_UNKNOWN: 422,
  ERR_INPUT_TYPE: 422,
  ERR_INPUT_VALUE: 422,
  ERR_INPUT_SHAPE: 422,
  ERR_OUTPUT_UNKNOWN: 422,
  ERR_QUEUE_FULL: 503,
  /** Too many requests in progress (or large ones waiting): refused before the body is read. */
  ERR_OVERLOADED: 503,
  ERR_DEADLINE_EXCEEDED: 504,
  ERR_NOT_READY: 503,
  /** The model is unloaded (or loading) through the repository API. */
  ERR_MODEL_UNAVAILABLE: 503,
  ERR_SHUTTING_DOWN: 503,
  /**
   * A load through the repository API found the model's files unusable (a model.json that does not parse, a
   * model.onnx the runtime refuses): the request was fine, the repository is not; the versions loaded
   * before keep serving.
   */
  ERR_MODEL_LOAD_FAILED: 409,
  /** The audit store cannot be read now (down, or not configured here). */
  ERR_AUDIT_UNAVAILABLE: 503,
  /** No API key where one is needed, or a key that is not configured. */
  ERR_UNAUTHENTICATED: 401,
  /** The key does not hold the scope the route needs. */
  ERR_FORBIDDEN: 403,
  /** An admin route, with no admin key configured (and admin routes not opened for development). */
  ERR_ADMIN_DISABLED: 403,
  /** Over the caller's rate limit; see Retry-After and the RateLimit header. */
  ERR_RATE_LIMITED: 429,
  /** The client went away mid-body: nobody receives this answer; it is counted, not logged as a fault. */
  ERR_CLIENT_CLOSED: 499,
  ERR_INFERENCE: 500,
  ERR_INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** The one error type of the server; `onError` turns it into a JSON response. */
export class ServeError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly field: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  /** For ERR_MODEL_AMBIGUOUS: the models that would fit. */
  readonly candidates: string[] | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { field?: string; retryAfterSeconds?: number; cause?: unknown; candidates?: string[] } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'ServeError';
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.field = opts.field;
    this.retryAfterSeconds = opts.retryAfterSeconds;
    this.candidates = opts.candidates;
  }
}

export const invalid = (code: ErrorCode, field: string, message: string) =>
  new ServeError(code, message, { field });

export const queueFull = (model: string, queuedRows: number) =>
  new ServeError(
    'ERR_QUEUE_FULL',
    `model ${model} has ${queuedRows} rows queued, the most it takes; retry shortly`,
    {
      retryAfterSeconds: 1,
    },
  );

export const modelNotFound = (name: string) =>
  new ServeError('ERR_MODEL_NOT_FOUND', `model '${name}' is not loaded`, { field: 'model' });

export const versionNotFound = (name: string, version: string) =>
  new ServeError('ERR_VERSION_NOT_FOUND', `model '${name}' has no loaded version '${version}'`, {
    field: 'version',
  });
