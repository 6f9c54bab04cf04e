/** What every route module receives from `createApp`: the dependencies, the settings, and shared helpers. */
import type { Tracer } from '@opentelemetry/api';
import type { Context } from 'hono';
import { type AccessConfig, API_KEY_VAR, type RateLimiter } from '../access.js';
import type { Admission } from '../admission.js';
import { type Answer, createAnswer } from '../answer.js';
import type { AuditReader, AuditSink } from '../audit.js';
import type { TieredCache } from '../cache.js';
import type { DriftMonitor } from '../drift.js';
import { ServeError } from '../errors.js';
import { type BodyReader, createBodyReader, timeoutHeader, yieldTurn } from '../http.js';
import { createInference, type Inference } from '../inference.js';
import type { Caller, Lifecycle } from '../lifecycle.js';
import type { Logger } from '../logger.js';
import type { AppMetrics } from '../metrics.js';
import type { ModelStats } from '../model-stats.js';
import type { Predictor } from '../predictor.js';
import type { ModelEntry, ModelRegistry } from '../registry.js';
import type { ModelRepository } from '../repository.js';
import type { Tensor } from '../tensor.js';
import { TRACE_SCOPE, type TraceScope } from '../tracing.js';

export interface AppDeps {
  registry: ModelRegistry;
  predictor: Predictor;
  metrics: AppMetrics;
  /** True once every model is loaded and warmed: predictions are served. */
  isReady: () => boolean;
  /**
   * True while shutting down: readiness answers 503 so load balancers stop sending traffic, while requests
   * that still arrive on open connections are served (answering them 503 would fail clients on every deploy).
   */
  isDraining?: () => boolean;
  /** Connectivity fields for /health (cache, audit store…), filled in by the entry point. */
  health?: () => Promise<Record<string, unknown>>;
  /** Prediction cache; absent = none. */
  cache?: TieredCache;
  /** Where audit records go; absent = none. */
  audit?: AuditSink;
  /** Reads the audit log back (GET /audit); absent = those routes answer 503 ERR_AUDIT_UNAVAILABLE. */
  auditReader?: AuditReader;
  /**
   * The repository API (index, load, unload); absent = the index lists what the registry holds and
   * load/unload are not served.
   */
  repository?: Pick<ModelRepository, 'index' | 'load' | 'unload'>;
  /**
   * Stages and traffic policies (which version answers a request naming none, A/B, canary, shadow); the
   * registry above must be its `registry`. Absent = the newest version serves and those routes are 404.
   */
  lifecycle?: Lifecycle;
  /** Triton-shaped statistics per model version (GET /v2/models/…/stats); absent = those routes answer 404. */
  stats?: ModelStats;
  /** Admission control for prediction requests (in-flight bound, a line for large bodies); absent = none. */
  admission?: Admission;
  /**
   * Parses a large JSON body (64 KiB or more) off this thread: what JSON.parse of its UTF-8 text gives, or
   * a SyntaxError. It takes the bytes (the caller reads them no more). Absent = parsed here, between turns
   * given to other requests.
   */
  parseLargeJson?: (bytes: Uint8Array) => Promise<unknown>;
  /**
   * The documentation pages' static files (Swagger UI, Redoc), by file name; absent = /docs and /redoc
   * answer 404. Node serves them from the installed packages, so the pages work with no internet.
   */
  docsAsset?: (file: string) => Promise<{ body: Uint8Array | string; type: string } | undefined>;
  /** Where log lines go (pino on Node); absent = nowhere. */
  logger?: Logger;
  /** Counts requests for rate limits (Redis-shared on Node when REDIS_URL is set); absent = no limits. */
  rateLimiter?: RateLimiter;
  /** The caller's address, for anonymous callers' rate limits; absent = they share one limit. */
  clientAddress?: (c: Context) => string | undefined;
  /**
   * Adds a header to this request's response the runtime's cheapest way; absent = `c.header`. On Node, a
   * header set through Hono's context moves the answer off @hono/node-server's lightweight path.
   */
  responseHeader?: (c: Context, name: string, value: string) => void;
  /** SHA-256 of an API key's UTF-8 bytes, the runtime's fastest way; absent = @noble/hashes. */
  sha256?: (key: string) => Uint8Array;
  /**
   * Traces: each request gets a span (continuing the caller's `traceparent`), with children for the cache
   * lookup, the inference and the audit hand-off. Absent = no tracing code runs per request.
   */
  tracer?: Tracer;
  /** Drift detection per model version (GET /models/{name}/drift, the seeds' stats); absent = off. */
  drift?: DriftMonitor;
}

/** Cross-origin requests from browsers: off unless origins are listed. */
export interface CorsConfig {
  /** Origins allowed (`*` for any). */
  origins: readonly string[];
  methods?: readonly string[];
  /** Request headers a browser may send; absent = the ones this API reads. */
  headers?: readonly string[];
  maxAgeSeconds?: number;
}

export interface AppConfig {
  /** Largest request body accepted. */
  maxBodyBytes: number;
  /** Most rows one request may carry. */
  maxRowsPerRequest: number;
  /** Reported by GET / and GET /v2. */
  serverVersion: string;
  /** Let concurrent identical misses share one inference (default). Off where requests must not wait on each other. */
  singleFlight?: boolean;
  /**
   * `/predict`'s `probability`: `positive` (default) = the positive class's (binary) or the predicted
   * class's (multiclass), as seed 000's clients read it; `list` = every class's, as seed 003's do.
   */
  probability?: 'positive' | 'list';
  /** Most ms a prediction may take (a client may ask for less); past it, 504 ERR_DEADLINE_EXCEEDED. */
  requestTimeoutMs?: number;
  /** How rows are batched (reported by GET /v2/models/{name}/config); false or absent = one request per run. */
  batching?: { maxBatchRows: number; maxQueueDelayMs: number; maxQueuedRows: number } | false;
  /** Execution threads, each holding every model (the config's instance_group); absent = not known. */
  instances?: number;
  /** API keys, who needs one, and rate limits. Absent = no keys: predictions open, admin routes refused. */
  access?: AccessConfig;
  /** Absent = no CORS headers (browsers on other origins cannot read answers). */
  cors?: CorsConfig;
  /**
   * The share of requests that get an access log line at level info (default 1: every one); answers of 500
   * and above always do. 0 turns the access log off.
   */
  accessLogSample?: number;
  /** The entry point adds `SECURITY_HEADERS` to every response itself (Node, where that is cheaper). */
  securityHeadersByRuntime?: boolean;
}

export interface RouteContext {
  deps: AppDeps;
  config: AppConfig;
  inference: Inference;
  readJson: BodyReader['readJson'];
  /** Body readers, the Open Inference Protocol's among them. */
  body: BodyReader;
  answer: Answer;
  /** Before a large request's costly step (building a big answer): small requests in progress go first. */
  giveWay(c: Context): Promise<void>;
  /** Throws 503 ERR_NOT_READY until every model is loaded and warmed. */
  requireReady(): void;
  /** Readiness for load balancers: not before the models are ready, and not while draining. */
  isReadyForTraffic(): boolean;
  /** Throws 503 ERR_NOT_READY while no model is loaded yet (metadata still answers during shutdown). */
  requireLoaded(): void;
  /** The model version a prediction request asks for, recorded for its statistics; returns it. */
  chosen(c: Context, entry: ModelEntry): ModelEntry;
  /**
   * Who asks, for a model's traffic policy: X-Client-Id, else the API key's name; a split sticks to it.
   */
  caller(c: Context): Caller;
  /**
   * When the served version's model has a shadow and this request is sampled: call the returned function
   * with the served outputs (and the served run's ms, unless rows came from the cache) once answered; the
   * shadow runs on a copy of the inputs, off the request's path, and is compared, never returned.
   */
  shadow(
    entry: ModelEntry,
    inputs: Record<string, Tensor>,
    rows: number,
  ): ((outputs: Record<string, Tensor>, servedMs: number | undefined) => void) | undefined;
  /** The client's id (body, then X-Request-Id, which is echoed back) or a fresh UUID. */
  requestId(c: Context, fromBody: string | undefined): string;
  /** This request's trace scope, when tracing is on. */
  trace(c: Context): TraceScope | undefined;
  /** When the answer stops being wanted: the server's limit, or less if the client asks (body, then X-Timeout-Ms). */
  deadline(c: Context, started: number, fromBody: number | undefined): number;
}

/** The context key under which a prediction request's model version is kept (see `chosen`). */
export const CHOSEN_MODEL = 'chosenModel';
/** The context key under which a request's id is kept once known (for its log lines). */
export const REQUEST_ID = 'requestId';

export const notReady = () =>
  new ServeError('ERR_NOT_READY', 'models are still loading, or the server is shutting down', {
    retryAfterSeconds: 1,
  });

export function createRouteContext(deps: AppDeps, config: AppConfig): RouteContext {
  const body = createBodyReader(config.maxBodyBytes, deps.admission?.giveWay, deps.parseLargeJson);
  return {
    deps,
    config,
    inference: createInference(deps.predictor, deps.cache, { singleFlight: config.singleFlight }),
    readJson: body.readJson,
    body,
    giveWay: deps.admission?.giveWay ?? yieldTurn,
    answer: createAnswer(deps.audit, deps.tracer !== undefined),
    requireReady() {
      if (!deps.isReady()) throw notReady();
    },
    isReadyForTraffic() {
      return deps.isReady() && !deps.isDraining?.();
    },
    requireLoaded() {
      if (!deps.isReady() && deps.registry.names().length === 0) throw notReady();
    },
    deadline(c, started, fromBody) {
      const limit = config.requestTimeoutMs ?? 30_000;
      const asked = fromBody ?? timeoutHeader(c);
      return started + (asked === undefined ? limit : Math.min(asked, limit));
    },
    chosen(c, entry) {
      c.set(CHOSEN_MODEL as never, entry as never);
      return entry;
    },
    caller(c) {
      const client = c.req.header('x-client-id');
      if (client !== undefined && client !== '') {
        if (client.length > 200) {
          throw new ServeError('ERR_VALIDATION', 'X-Client-Id is over 200 characters', {
            field: 'x-client-id',
          });
        }
        return { id: `c:${client}` };
      }
      const key = c.get(API_KEY_VAR as never) as string | undefined;
      return { id: key === undefined ? undefined : `k:${key}` };
    },
    shadow(entry, inputs, rows) {
      const lifecycle = deps.lifecycle;
      const shadow = lifecycle?.shadowFor(entry);
      if (!lifecycle || !shadow) return undefined;
      // A copy: the served run may hand its inputs' buffers to a worker thread.
      const copy: Record<string, Tensor> = {};
      for (const [name, t] of Object.entries(inputs)) copy[name] = { ...t, data: t.data.slice() } as Tensor;
      return (outputs, servedMs) => {
        lifecycle.began();
        const started = performance.now();
        const of = (e: ModelEntry, out: Record<string, Tensor>) => ({
          prediction: e.predictionOutput ? out[e.predictionOutput]?.data : undefined,
          probabilities: e.probabilityOutput ? (out[e.probabilityOutput]?.data as Float32Array) : undefined,
        });
        deps.predictor.infer(shadow, copy, rows).then(
          (out) =>
            lifecycle.compare(entry, shadow, {
              rows,
              served: { ...of(entry, outputs), ms: servedMs },
              shadow: { ...of(shadow, out), ms: performance.now() - started },
            }),
          () => lifecycle.compare(entry, shadow, { failed: true }),
        );
      };
    },
    requestId(c, fromBody) {
      const id = requestIdOf(c, fromBody);
      c.set(REQUEST_ID as never, id as never);
      return id;
    },
    // A request whose trace is not sampled gets no child spans at all (not even non-recording ones).
    trace: deps.tracer
      ? (c) => {
          const scope = c.get(TRACE_SCOPE as never) as TraceScope | undefined;
          return scope?.span.isRecording() ? scope : undefined;
        }
      : () => undefined,
  };
}

function requestIdOf(c: Context, fromBody: string | undefined): string {
  if (fromBody !== undefined) return fromBody;
  const header = c.req.header('x-request-id');
  if (!header) return crypto.randomUUID();
  if (header.length > 200) {
    throw new ServeError('ERR_VALIDATION', 'X-Request-Id is over 200 characters', {
      field: 'x-request-id',
    });
  }
  c.header('X-Request-Id', header);
  return header;
}

/** Answers of at least this many rows take ms to build and write: small requests in progress go first. */
export const LARGE_ANSWER_ROWS = 1000;
