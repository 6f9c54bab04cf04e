import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { type ApiKey, parseKeys } from '../core/access.js';
import { projectRoot } from './paths.js';

const shippedModelsDir = () => join(projectRoot(), 'models');

const int = (min: number) => z.coerce.number().int().min(min);
const onOff = z.enum(['on', 'off']);
const httpUrl = z.string().regex(/^https?:\/\/[^/\s]+/, 'must be an http:// or https:// URL');
const otlpProtocol = z.enum(['http/protobuf', 'http/json'], {
  message: 'http/protobuf or http/json (OTLP over gRPC is not supported)',
});

const EnvSchema = z.object({
  PORT: int(0).max(65535).default(8000),
  HOST: z.string().min(1).default('127.0.0.1'),
  MODELS_DIR: z.string().min(1).optional(),
  DEFAULT_MODEL: z.string().min(1).optional(),
  WATCH_MODELS: z.enum(['true', 'false']).default('true'),
  POOL_SIZE: int(1).max(256).default(availableParallelism()),
  INTRA_OP_THREADS: int(1).max(64).default(1),
  JSON_PARSE_THREADS: int(0).max(64).default(1),
  BATCH_MAX_ROWS: int(1).default(512),
  BATCH_MAX_DELAY_MS: z.coerce.number().min(0).max(1000).default(1),
  BATCH_MAX_QUEUED_ROWS: int(1).default(20_000),
  BATCH_MAX_IN_FLIGHT: int(1).optional(),
  MAX_BODY_BYTES: int(1024).default(4 * 1024 * 1024),
  MAX_ROWS_PER_REQUEST: int(1).optional(),
  SHUTDOWN_TIMEOUT_MS: int(0).default(10_000),
  SHUTDOWN_DELAY_MS: int(0).default(0),
  SHADOW_MAX_LOAD: z.coerce.number().min(0).max(1).default(0.8),
  CACHE: onOff.default('on'),
  CACHE_L1_MAX_ENTRIES: int(1).default(100_000),
  CACHE_L1_MAX_BYTES: int(1024).default(64 * 1024 * 1024),
  CACHE_TTL_SECONDS: int(1).default(3600),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
    .optional(),
  REDIS_TIMEOUT_MS: int(1).default(25),
  REDIS_BREAK_AFTER: int(1).default(3),
  REDIS_PROBE_MS: int(10).default(1000),
  AUDIT: onOff.default('on'),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL')
    .optional(),
  AUDIT_DIR: z.string().min(1).default('.data'),
  AUDIT_BATCH_ROWS: int(1).max(10_000).default(1000),
  AUDIT_FLUSH_MS: int(1).default(200),
  AUDIT_RETRY_MS: int(10).default(1000),
  AUDIT_MAX_QUEUE_BYTES: int(1024).default(64 * 1024 * 1024),
  AUDIT_BATCH_BYTES: int(1024).default(8 * 1024 * 1024),
  AUDIT_STORE_TIMEOUT_MS: int(100).default(10_000),
  AUDIT_CAPTURE_MS: int(1).max(1000).default(10),
  AUDIT_LOG_MAX_BYTES: int(1024 * 1024).default(1024 * 1024 * 1024),
  AUDIT_SEGMENT_BYTES: int(64 * 1024).default(64 * 1024 * 1024),
  AUDIT_FSYNC_MS: int(10).default(1000),
  AUDIT_RETENTION_DAYS: int(0).default(0),
  PREDICT_PROBABILITY: z.enum(['positive', 'list']).default('positive'),
  RUN_TIMEOUT_MS: int(10).default(60_000),
  REQUEST_TIMEOUT_MS: int(1).default(30_000),
  HTTP_HEADERS_TIMEOUT_MS: int(100).default(10_000),
  HTTP_REQUEST_TIMEOUT_MS: int(100).default(30_000),
  HTTP_KEEP_ALIVE_TIMEOUT_MS: int(100).default(5_000),
  HTTP_MAX_CONNECTIONS: int(1).default(10_000),
  MAX_INFLIGHT_REQUESTS: int(1).default(1024),
  HEAVY_BODY_BYTES: int(1024).default(256 * 1024),
  HEAVY_MAX_CONCURRENT: int(1).default(1),
  HEAVY_MAX_WAITING: int(0).default(64),
  HEAVY_YIELD_MS: int(0).max(1000).default(20),
  API_KEYS: z.string().optional(),
  API_KEYS_FILE: z.string().min(1).optional(),
  AUTH_PREDICTIONS: z.enum(['open', 'keyed']).default('open'),
  ADMIN_OPEN: z.enum(['true', 'false']).default('false'),
  RATE_LIMIT_PER_KEY: int(1).optional(),
  RATE_LIMIT_PER_ADDRESS: int(1).optional(),
  RATE_LIMIT_WINDOW_SECONDS: int(1).max(3600).default(1),
  TRUST_PROXY_HOPS: int(0).max(10).default(0),
  CORS_ORIGINS: z.string().optional(),
  CORS_METHODS: z.string().optional(),
  CORS_HEADERS: z.string().optional(),
  CORS_MAX_AGE_SECONDS: int(0).max(86_400).default(600),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
  ACCESS_LOG_SAMPLE: z.coerce.number().min(0).max(1).default(1),
  // OpenTelemetry's own names (the exporter also reads OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION).
  OTEL_EXPORTER_OTLP_ENDPOINT: httpUrl.optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: httpUrl.optional(),
  OTEL_EXPORTER_OTLP_PROTOCOL: otlpProtocol.default('http/protobuf'),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: otlpProtocol.optional(),
  OTEL_SERVICE_NAME: z.string().min(1).default('onnx-serve'),
  OTEL_TRACES_SAMPLER: z
    .enum([
      'always_on',
      'always_off',
      'traceidratio',
      'parentbased_always_on',
      'parentbased_always_off',
      'parentbased_traceidratio',
    ])
    .default('parentbased_always_on'),
  OTEL_TRACES_SAMPLER_ARG: z.coerce.number().min(0).max(1).optional(),
  OTEL_SDK_DISABLED: z.enum(['true', 'false']).default('false'),
  DRIFT: onOff.default('on'),
  DRIFT_WINDOW_ROWS: int(10).max(10_000_000).default(10_000),
  DRIFT_MIN_ROWS: int(1).optional(),
  DRIFT_PSI_THRESHOLD: z.coerce.number().positive().default(0.2),
  DRIFT_SAMPLE: z.coerce.number().min(0).max(1).default(1),
  DRIFT_CAPTURE_ROWS: int(0).max(1_000_000).default(1000),
});

const list = (s: string | undefined) =>
  s
    ?.split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');

export interface ServerConfig {
  port: number;
  host: string;
  modelsDir: string;
  defaultModel: string | undefined;
  /** Reload a model when its directory under modelsDir changes (a version copied in or removed). */
  watchModels: boolean;
  poolSize: number;
  intraOpNumThreads: number;
  /** Threads that parse JSON bodies of 64 KiB or more; 0 = the main thread parses them. */
  jsonParseThreads: number;
  /** Most ms one batch may run before its worker is ended and replaced. */
  runTimeoutMs: number;
  /** Most ms a prediction may take (clients may ask for less): past it, 504. */
  requestTimeoutMs: number;
  batching: { maxBatchRows: number; maxQueueDelayMs: number; maxQueuedRows: number; maxInFlight: number };
  maxBodyBytes: number;
  maxRowsPerRequest: number;
  shutdownTimeoutMs: number;
  /**
   * How long after SIGTERM the server keeps accepting connections (not ready, every answer with
   * `Connection: close`) before it closes its listener: the time a load balancer takes to stop sending it
   * new connections. Within shutdownTimeoutMs.
   */
  shutdownDelayMs: number;
  /** Shadow runs are skipped while the event loop was busy at least this share of the last second (1 = never). */
  shadowMaxLoad: number;
  /** Refusals decided on the headers alone: in-flight bound, and a line for large bodies. */
  admission: {
    maxInFlight: number;
    heavyBodyBytes: number;
    heavyConcurrency: number;
    heavyMaxWaiting: number;
    heavyYieldMs: number;
  };
  /** `/predict`'s `probability`: the positive (or predicted) class's, or every class's as seed 003 reads it. */
  probability: 'positive' | 'list';
  /** Log level, and the share of requests that get an access log line (5xx answers always do). */
  log: { level: 'debug' | 'info' | 'warn' | 'error' | 'silent'; accessSample: number };
  /** OTLP trace export; absent = no tracing (no OTLP endpoint set, or OTEL_SDK_DISABLED=true). */
  tracing:
    | {
        /** Where spans are POSTed (the traces endpoint itself, …/v1/traces). */
        url: string;
        protocol: 'http/protobuf' | 'http/json';
        serviceName: string;
        sampler: { name: string; ratio: number };
      }
    | undefined;
  /** Drift detection (see src/core/drift.ts); absent = off. */
  drift:
    | {
        windowRows: number;
        minRows: number;
        psiThreshold: number;
        sample: number;
        captureRows: number;
      }
    | undefined;
  /** Limits that keep slow or idle clients from holding the server (slowloris). */
  http: {
    headersTimeoutMs: number;
    requestTimeoutMs: number;
    keepAliveTimeoutMs: number;
    maxConnections: number;
  };
  /** Redis for what replicas share (the cache's L2, rate limits); absent = no REDIS_URL. */
  redis: { url: string; timeoutMs: number; breakAfter: number; probeMs: number } | undefined;
  cache: {
    enabled: boolean;
    l1: { maxEntries: number; maxBytes: number; ttlMs: number };
    redis:
      | { url: string; ttlSeconds: number; timeoutMs: number; breakAfter: number; probeMs: number }
      | undefined;
  };
  audit: {
    enabled: boolean;
    databaseUrl: string | undefined;
    dir: string;
    batchRows: number;
    flushMs: number;
    retryMs: number;
    maxQueueBytes: number;
    batchBytes: number;
    /** Most ms any store call may take before the store counts as down (its records wait in the log). */
    storeTimeoutMs: number;
    captureMs: number;
    maxLogBytes: number;
    segmentBytes: number;
    fsyncMs: number;
    retentionDays: number;
  };
  /** API keys (SHA-256 digests only), who needs one, rate limits. */
  access: {
    keys: ApiKey[];
    keyedPredictions: boolean;
    openAdmin: boolean;
    keyRate: { points: number; windowSeconds: number } | undefined;
    anonymousRate: { points: number; windowSeconds: number } | undefined;
    rateWindowSeconds: number;
    /** Proxies in front of the server whose X-Forwarded-For entries are trusted (0: the socket's address). */
    trustProxyHops: number;
  };
  cors: { origins: string[]; methods?: string[]; headers?: string[]; maxAgeSeconds: number } | undefined;
}

/** Keys from API_KEYS and the file API_KEYS_FILE names (a mounted secret); errors name the variable. */
function readKeys(text: string | undefined, file: string | undefined): ApiKey[] {
  const keys: ApiKey[] = [];
  try {
    keys.push(...parseKeys(text));
  } catch (err) {
    throw new Error(`invalid configuration:\n  API_KEYS: ${(err as Error).message}`);
  }
  if (file) {
    let content: string;
    try {
      content = readFileSync(file, 'utf8');
    } catch (err) {
      throw new Error(`invalid configuration:\n  API_KEYS_FILE=${file}: ${(err as Error).message}`);
    }
    try {
      const more = parseKeys(content);
      const clash = more.find((k) => keys.some((o) => o.name === k.name));
      if (clash) throw new Error(`the name "${clash.name}" is also in API_KEYS`);
      keys.push(...more);
    } catch (err) {
      throw new Error(`invalid configuration:\n  API_KEYS_FILE=${file}: ${(err as Error).message}`);
    }
  }
  return keys;
}

/** Read and check the environment once; an invalid value stops start-up with the variable's name. */
export function loadConfig(env: Record<string, string | undefined> = process.env): ServerConfig {
  // An empty or blank value is unset (its default applies): `z.coerce` would read "  " as the number 0.
  const given = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ''));
  const parsed = EnvSchema.safeParse(given);
  if (!parsed.success) {
    // Values that may hold secrets (passwords in URLs, keys) are not repeated in the message.
    const secret = (name: string) => /URL$|KEYS/.test(name);
    const lines = parsed.error.issues.map((i) => {
      const name = String(i.path[0]);
      return `${i.path.join('.')}${secret(name) ? '' : `=${JSON.stringify(env[name])}`}: ${i.message}`;
    });
    throw new Error(`invalid configuration:\n  ${lines.join('\n  ')}`);
  }
  const e = parsed.data;
  const redis = e.REDIS_URL
    ? {
        url: e.REDIS_URL,
        timeoutMs: e.REDIS_TIMEOUT_MS,
        breakAfter: e.REDIS_BREAK_AFTER,
        probeMs: e.REDIS_PROBE_MS,
      }
    : undefined;
  // Settings that must agree with each other.
  const clashes: string[] = [];
  if (e.HTTP_HEADERS_TIMEOUT_MS > e.HTTP_REQUEST_TIMEOUT_MS) {
    clashes.push(
      `HTTP_HEADERS_TIMEOUT_MS=${e.HTTP_HEADERS_TIMEOUT_MS}: must not exceed HTTP_REQUEST_TIMEOUT_MS=${e.HTTP_REQUEST_TIMEOUT_MS}`,
    );
  }
  if (e.SHUTDOWN_DELAY_MS > 0 && e.SHUTDOWN_DELAY_MS >= e.SHUTDOWN_TIMEOUT_MS) {
    clashes.push(
      `SHUTDOWN_DELAY_MS=${e.SHUTDOWN_DELAY_MS}: must be less than SHUTDOWN_TIMEOUT_MS=${e.SHUTDOWN_TIMEOUT_MS} (the drain after it must fit in the limit)`,
    );
  }
  // By default a request may carry as many rows as the queue holds, up to 10,000.
  const maxRows = e.MAX_ROWS_PER_REQUEST ?? Math.min(10_000, e.BATCH_MAX_QUEUED_ROWS);
  if (maxRows > e.BATCH_MAX_QUEUED_ROWS) {
    clashes.push(
      `MAX_ROWS_PER_REQUEST=${e.MAX_ROWS_PER_REQUEST}: must not exceed BATCH_MAX_QUEUED_ROWS=${e.BATCH_MAX_QUEUED_ROWS} (a request that large could never be queued)`,
    );
  }
  const keys = readKeys(e.API_KEYS, e.API_KEYS_FILE);
  if (e.AUTH_PREDICTIONS === 'keyed' && !keys.some((k) => k.scopes.includes('predict'))) {
    clashes.push(
      'AUTH_PREDICTIONS=keyed: no key with the predict scope in API_KEYS or API_KEYS_FILE, so every prediction would be refused',
    );
  }
  const origins = list(e.CORS_ORIGINS);
  for (const o of origins ?? []) {
    let ok = o === '*';
    try {
      ok ||= new URL(o).origin === o;
    } catch {}
    if (!ok)
      clashes.push(`CORS_ORIGINS: "${o}" is not an origin (scheme://host[:port], no path or slash) or *`);
  }
  if (e.CORS_ORIGINS !== undefined && origins?.length === 0) clashes.push('CORS_ORIGINS: no origin listed');
  if (clashes.length > 0) throw new Error(`invalid configuration:\n  ${clashes.join('\n  ')}`);
  return {
    port: e.PORT,
    host: e.HOST,
    modelsDir: e.MODELS_DIR ? resolve(e.MODELS_DIR) : shippedModelsDir(),
    // The shipped models answer seed clients (which name no model) with the churn classifier.
    defaultModel: e.DEFAULT_MODEL ?? (e.MODELS_DIR ? undefined : 'churn'),
    watchModels: e.WATCH_MODELS === 'true',
    poolSize: e.POOL_SIZE,
    intraOpNumThreads: e.INTRA_OP_THREADS,
    jsonParseThreads: e.JSON_PARSE_THREADS,
    runTimeoutMs: e.RUN_TIMEOUT_MS,
    requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    batching: {
      maxBatchRows: e.BATCH_MAX_ROWS,
      maxQueueDelayMs: e.BATCH_MAX_DELAY_MS,
      maxQueuedRows: e.BATCH_MAX_QUEUED_ROWS,
      maxInFlight: e.BATCH_MAX_IN_FLIGHT ?? e.POOL_SIZE,
    },
    maxBodyBytes: e.MAX_BODY_BYTES,
    maxRowsPerRequest: maxRows,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    shutdownDelayMs: e.SHUTDOWN_DELAY_MS,
    shadowMaxLoad: e.SHADOW_MAX_LOAD,
    admission: {
      maxInFlight: e.MAX_INFLIGHT_REQUESTS,
      heavyBodyBytes: e.HEAVY_BODY_BYTES,
      heavyConcurrency: e.HEAVY_MAX_CONCURRENT,
      heavyMaxWaiting: e.HEAVY_MAX_WAITING,
      heavyYieldMs: e.HEAVY_YIELD_MS,
    },
    probability: e.PREDICT_PROBABILITY,
    log: { level: e.LOG_LEVEL, accessSample: e.ACCESS_LOG_SAMPLE },
    tracing: tracingOf(e),
    drift:
      e.DRIFT === 'on'
        ? {
            windowRows: e.DRIFT_WINDOW_ROWS,
            minRows: Math.min(e.DRIFT_MIN_ROWS ?? 1000, e.DRIFT_WINDOW_ROWS),
            psiThreshold: e.DRIFT_PSI_THRESHOLD,
            sample: e.DRIFT_SAMPLE,
            captureRows: e.DRIFT_CAPTURE_ROWS,
          }
        : undefined,
    http: {
      headersTimeoutMs: e.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: e.HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: e.HTTP_KEEP_ALIVE_TIMEOUT_MS,
      maxConnections: e.HTTP_MAX_CONNECTIONS,
    },
    redis,
    cache: {
      enabled: e.CACHE === 'on',
      l1: {
        maxEntries: e.CACHE_L1_MAX_ENTRIES,
        maxBytes: e.CACHE_L1_MAX_BYTES,
        ttlMs: e.CACHE_TTL_SECONDS * 1000,
      },
      redis: redis && { ...redis, ttlSeconds: e.CACHE_TTL_SECONDS },
    },
    audit: {
      enabled: e.AUDIT === 'on',
      databaseUrl: e.DATABASE_URL,
      dir: resolve(e.AUDIT_DIR),
      batchRows: e.AUDIT_BATCH_ROWS,
      flushMs: e.AUDIT_FLUSH_MS,
      retryMs: e.AUDIT_RETRY_MS,
      maxQueueBytes: e.AUDIT_MAX_QUEUE_BYTES,
      batchBytes: e.AUDIT_BATCH_BYTES,
      storeTimeoutMs: e.AUDIT_STORE_TIMEOUT_MS,
      captureMs: e.AUDIT_CAPTURE_MS,
      maxLogBytes: e.AUDIT_LOG_MAX_BYTES,
      segmentBytes: e.AUDIT_SEGMENT_BYTES,
      fsyncMs: e.AUDIT_FSYNC_MS,
      retentionDays: e.AUDIT_RETENTION_DAYS,
    },
    access: {
      keys,
      keyedPredictions: e.AUTH_PREDICTIONS === 'keyed',
      openAdmin: e.ADMIN_OPEN === 'true',
      keyRate: e.RATE_LIMIT_PER_KEY
        ? { points: e.RATE_LIMIT_PER_KEY, windowSeconds: e.RATE_LIMIT_WINDOW_SECONDS }
        : undefined,
      anonymousRate: e.RATE_LIMIT_PER_ADDRESS
        ? { points: e.RATE_LIMIT_PER_ADDRESS, windowSeconds: e.RATE_LIMIT_WINDOW_SECONDS }
        : undefined,
      rateWindowSeconds: e.RATE_LIMIT_WINDOW_SECONDS,
      trustProxyHops: e.TRUST_PROXY_HOPS,
    },
    cors: origins
      ? {
          origins,
          ...(e.CORS_METHODS ? { methods: list(e.CORS_METHODS) } : {}),
          ...(e.CORS_HEADERS ? { headers: list(e.CORS_HEADERS) } : {}),
          maxAgeSeconds: e.CORS_MAX_AGE_SECONDS,
        }
      : undefined,
  };
}

/**
 * Tracing as OpenTelemetry's variables set it: on once an OTLP endpoint is given. The base endpoint gets the
 * signal's path (`/v1/traces`); the traces endpoint is used as it is.
 */
function tracingOf(e: z.infer<typeof EnvSchema>): ServerConfig['tracing'] {
  if (e.OTEL_SDK_DISABLED === 'true') return undefined;
  const url =
    e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
    (e.OTEL_EXPORTER_OTLP_ENDPOINT
      ? `${e.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces`
      : undefined);
  if (!url) return undefined;
  return {
    url,
    protocol: e.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? e.OTEL_EXPORTER_OTLP_PROTOCOL,
    serviceName: e.OTEL_SERVICE_NAME,
    sampler: { name: e.OTEL_TRACES_SAMPLER, ratio: e.OTEL_TRACES_SAMPLER_ARG ?? 1 },
  };
}

/** Every environment variable the server reads. */
export const CONFIG_VARIABLES = Object.keys(EnvSchema.shape);
