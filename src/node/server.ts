/**
 * The Node server, wired leaves first: config → metrics → stores (cache, audit) → backend → predictor →
 * app → HTTP server, then the models load in the background while liveness already answers.
 */
import { hash } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { type AddressInfo, Server as NetServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { serve } from '@hono/node-server';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { SpanExporter } from '@opentelemetry/sdk-trace';
import type { Context } from 'hono';
import { createAdmission } from '../core/admission.js';
import { createApp, SECURITY_HEADERS } from '../core/app.js';
import type { AuditStore } from '../core/audit-sql.js';
import type { InferenceBackend } from '../core/backend.js';
import { createMemoryTier, createTieredCache, type MemoryTier } from '../core/cache.js';
import { createDriftMonitor, type DriftMonitor } from '../core/drift.js';
import { ServeError } from '../core/errors.js';
import { createLifecycle } from '../core/lifecycle.js';
import { createModelStats } from '../core/model-stats.js';
import { createPredictor } from '../core/predictor.js';
import type { ModelRegistry } from '../core/registry.js';
import { createModelRepository, type ModelRepository, type StoredVersion } from '../core/repository.js';
import { type AuditLog, createAuditLog } from './audit/audit-log.js';
import type { ServerConfig } from './config.js';
import { createDocsAssets } from './docs-assets.js';
import { createJsonParser } from './json-offload.js';
import { createLifecycleStore, setModelJsonField } from './lifecycle-store.js';
import { log, logger, requestLogger } from './log.js';
import { scanModelRepository } from './model-store.js';
import { createModelWatcher, type ModelWatcher } from './model-watcher.js';
import { createPoolBackend } from './pool-backend.js';
import { createPromMetrics, type PromMetrics } from './prom-metrics.js';
import { createRateLimiter, type NodeRateLimiter } from './rate-limiter.js';
import { createRedisTier, type RedisTier } from './redis-tier.js';
import { createShedder } from './shed.js';
import { createTracing } from './tracing.js';

export interface RunningServer {
  url: string;
  port: number;
  registry: ModelRegistry;
  backend: InferenceBackend;
  audit: AuditLog | undefined;
  /** Resolves once every model is loaded and warmed in every worker. */
  ready: Promise<void>;
  /** Stop accepting, finish in-flight requests, close the pool, flush the audit log. */
  close(): Promise<void>;
}

const VERSION = '0.1.0';

/** Drift detection per model version; references set through the API are kept in their model.json. */
function createDrift(config: ServerConfig): DriftMonitor | undefined {
  if (!config.drift) return undefined;
  return createDriftMonitor({
    ...config.drift,
    persist: (entry, reference) =>
      setModelJsonField(config.modelsDir, entry.name, entry.version, 'drift_reference', reference),
  });
}

/** The prediction cache: L1 in process, L2 in Redis when REDIS_URL is set. */
function createCache(config: ServerConfig['cache'], metrics: PromMetrics) {
  if (!config.enabled) return { l1: undefined, redis: undefined, cache: undefined };
  const l1: MemoryTier = createMemoryTier(config.l1);
  const redis: RedisTier | undefined = config.redis
    ? createRedisTier({ ...config.redis, observer: metrics })
    : undefined;
  return { l1, redis, cache: createTieredCache(l1, redis, metrics) };
}

/**
 * The audit log: every answered prediction's record goes to a segment log on disk (AUDIT_DIR/log) within
 * AUDIT_CAPTURE_MS, then to Postgres when DATABASE_URL is set, else to the embedded SQLite file.
 */
function createAudit(
  config: ServerConfig['audit'],
  metrics: PromMetrics,
): { audit: AuditLog; store: AuditStore } | { audit: undefined; store: undefined } {
  if (!config.enabled) return { audit: undefined, store: undefined };
  const audit = createAuditLog({
    dir: config.dir,
    databaseUrl: config.databaseUrl,
    storeTimeoutMs: config.storeTimeoutMs,
    batchRows: config.batchRows,
    batchBytes: config.batchBytes,
    flushMs: config.flushMs,
    retryMs: config.retryMs,
    captureMs: config.captureMs,
    maxQueueBytes: config.maxQueueBytes,
    maxLogBytes: config.maxLogBytes,
    segmentBytes: config.segmentBytes,
    fsyncMs: config.fsyncMs,
    retentionDays: config.retentionDays,
    observer: metrics,
    log,
  });
  return { audit, store: audit.store };
}

/** /health's dependency fields, in the seeds' names. */
function healthOf(l1: MemoryTier | undefined, redis: RedisTier | undefined, audit: AuditLog | undefined) {
  return async () => ({
    redis_connected: redis ? redis.connected() : false,
    cache: l1
      ? {
          l1_entries: l1.size,
          l2: redis ? redis.status() : 'not configured',
        }
      : 'off',
    ...(audit ? audit.status() : { database_connected: false, audit_store: 'off' }),
  });
}

/** Rate limits, when any is set: counted in Redis when REDIS_URL is set (one limit for every replica). */
function createLimiter(config: ServerConfig, metrics: PromMetrics): NodeRateLimiter | undefined {
  const { access } = config;
  if (!access.keyRate && !access.anonymousRate && !access.keys.some((k) => k.rate !== undefined)) {
    return undefined;
  }
  return createRateLimiter({ redis: config.redis, observer: metrics });
}

/**
 * The caller's address for per-address limits: the socket's peer, or, behind TRUST_PROXY_HOPS proxies, the
 * X-Forwarded-For entry the nearest of them saw (entries further left are the client's own claims).
 */
function clientAddress(trustedHops: number) {
  return (c: Context): string | undefined => {
    let peer: string | undefined;
    try {
      peer = getConnInfo(c).remote.address;
    } catch {
      return undefined; // not an HTTP request from a socket (app.request in tests)
    }
    if (trustedHops === 0) return peer;
    const forwarded = c.req.header('x-forwarded-for');
    if (!forwarded) return peer;
    const hops = forwarded.split(',').map((s) => s.trim());
    return hops[hops.length - trustedHops] || peer;
  };
}

type Fetch = (req: Request, env?: object) => Response | Promise<Response>;

/** Node's response object, from the env @hono/node-server hands the app (absent in app.request tests). */
const outgoingOf = (env: unknown) =>
  (env as { outgoing?: { setHeader(name: string, value: string): void } } | undefined)?.outgoing;

/** A header set on Node's response (merged into the app's answer when it is written), else through Hono. */
function nodeResponseHeader(c: Context, name: string, value: string) {
  const outgoing = outgoingOf(c.env);
  if (outgoing) outgoing.setHeader(name, value);
  else c.header(name, value);
}

/**
 * The security headers, set on Node's response before the app runs: Node merges them into whatever the app
 * answers (errors and refusals too), and the app's answers keep @hono/node-server's lightweight path.
 */
function withSecurityHeaders(fetch: Fetch, crossOrigin: boolean): Fetch {
  const headers = SECURITY_HEADERS(crossOrigin);
  return (req, env) => {
    const outgoing = outgoingOf(env);
    if (outgoing) for (const [name, value] of headers) outgoing.setHeader(name, value);
    return fetch(req, env);
  };
}

/**
 * Whether the event loop has capacity to spare: busy while it was running at least `max` of the last second
 * (event-loop utilization, as `perf_hooks` measures it). Undefined when max is 1 (never busy).
 */
function loadMonitor(max: number, windowMs = 1000) {
  if (max >= 1) return undefined;
  let last = performance.eventLoopUtilization();
  let busy = max <= 0;
  const timer = setInterval(() => {
    const now = performance.eventLoopUtilization();
    busy = performance.eventLoopUtilization(now, last).utilization >= max;
    last = now;
  }, windowMs);
  timer.unref();
  return {
    busy: () => busy,
    stop: () => {
      clearInterval(timer);
      busy = max <= 0;
    },
  };
}

/** While draining, every response tells its client to close the connection (and Node closes it after). */
function drainAware(fetch: Fetch, draining: () => boolean): Fetch {
  const closeAfter = (res: Response) => {
    try {
      res.headers.set('Connection', 'close');
      return res;
    } catch {
      // Immutable headers: copy the response.
      const copy = new Response(res.body, res);
      copy.headers.set('Connection', 'close');
      return copy;
    }
  };
  // Outside a drain the app's own fetch answers, with no extra promise per request.
  // The env (Node's request and response objects) passes through: the client's address is read from it.
  return (req, env) => (draining() ? Promise.resolve(fetch(req, env)).then(closeAfter) : fetch(req, env));
}

async function listen(
  fetch: Fetch,
  config: ServerConfig,
  /** Answers a request before the app sees it, returning true when it has (see shed.ts). */
  front?: (req: IncomingMessage, res: ServerResponse) => boolean,
) {
  const { http } = config;
  const server = serve({
    fetch,
    port: config.port,
    hostname: config.host,
    serverOptions: {
      // A client gets this long to send its headers, and its whole request; Node checks both every
      // connectionsCheckingInterval (30 s by default), so check often enough for the limits to hold.
      headersTimeout: http.headersTimeoutMs,
      requestTimeout: http.requestTimeoutMs,
      connectionsCheckingInterval: Math.max(100, Math.min(1000, http.headersTimeoutMs / 2)),
      keepAliveTimeout: http.keepAliveTimeoutMs,
    },
  }) as Server;
  // Past this many open connections, new ones are closed at once.
  server.maxConnections = http.maxConnections;
  if (front) {
    // The adapter's listener runs only for what the front leaves to it.
    const app = server.listeners('request') as ((req: IncomingMessage, res: ServerResponse) => void)[];
    server.removeAllListeners('request');
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      if (front(req, res)) return;
      for (const listener of app) listener.call(server, req, res);
    });
  }
  await new Promise<void>((resolve, reject) => {
    if (server.listening) resolve();
    server.once('listening', resolve);
    server.once('error', reject);
  });
  return server;
}

/** The model repository on disk, as the core's repository reads it (again on each load request). */
const scanVersions =
  (modelsDir: string) =>
  async (name?: string): Promise<StoredVersion[]> =>
    (await scanModelRepository(modelsDir, name)).map((m) => ({
      name: m.name,
      version: m.version,
      sha256: m.sha256,
      metadata: m.metadata,
      source: { id: `${m.name}@${m.version}`, path: m.path },
    }));

/**
 * What the watcher does when a model's directory changed: reload it (its versions as they are on disk now),
 * or unload it when no version is left. A version that fails to load (a corrupt or half-copied model.onnx)
 * changes nothing: the versions loaded before keep serving, and the failure is logged.
 */
async function reloadFromDisk(repository: ModelRepository, name: string) {
  const before = repository.index().filter((m) => m.name === name && m.state === 'READY');
  try {
    const entries = await repository.load(name);
    log('info', 'model reloaded from MODELS_DIR', {
      model: name,
      versions: entries.map((e) => e.version),
      was: before.map((m) => m.version),
    });
  } catch (err) {
    if (err instanceof ServeError && err.code === 'ERR_MODEL_NOT_FOUND') {
      if (before.length === 0) return;
      await repository.unload(name);
      log('info', 'model unloaded: its directory holds no version now', { model: name });
      return;
    }
    log('warn', 'model reload failed; the versions loaded before keep serving', {
      model: name,
      versions: before.map((m) => m.version),
      error: String(err),
    });
  }
}

/** Say at start who may call what: key names and scopes (never digests), open admin routes, limits. */
function logAccess(config: ServerConfig, limiter: NodeRateLimiter | undefined) {
  const { access } = config;
  log('info', 'access', {
    keys: access.keys.map((k) => ({ name: k.name, scopes: k.scopes, ...(k.rate ? { rate: k.rate } : {}) })),
    predictions: access.keyedPredictions ? 'keyed' : 'open',
    admin: access.openAdmin
      ? 'open'
      : access.keys.some((k) => k.scopes.includes('admin'))
        ? 'keyed'
        : 'off (no admin key)',
    rate_limits: limiter
      ? {
          per_key: access.keyRate ?? null,
          per_address: access.anonymousRate ?? null,
          counted: config.redis ? 'redis (in process while it is down)' : 'in process',
        }
      : 'off',
    cors: config.cors?.origins ?? 'off',
  });
  if (access.openAdmin) {
    log('warn', 'ADMIN_OPEN=true: admin routes answer without a key; for local development only');
  }
}

/**
 * Listen at once (liveness answers while models load), then load every model into the pool; readiness
 * turns true when all workers hold warmed sessions.
 */
export async function startServer(
  config: ServerConfig,
  /** `spanExporter`: trace every request into it (tests), whatever the configuration says. */
  options: { spanExporter?: SpanExporter } = {},
): Promise<RunningServer> {
  logger.level = config.log.level;
  requestLogger.level = config.log.level;
  const tracing = createTracing(config.tracing, { version: VERSION, exporter: options.spanExporter });
  const metrics = createPromMetrics();
  const { l1, redis, cache } = createCache(config.cache, metrics);
  const { audit, store: auditStore } = createAudit(config.audit, metrics);
  const backend = createPoolBackend({
    size: config.poolSize,
    intraOpNumThreads: config.intraOpNumThreads,
    runTimeoutMs: config.runTimeoutMs,
  });
  const stats = createModelStats();
  const drift = createDrift(config);
  const predictor = createPredictor({
    backend,
    batching: config.batching,
    drift,
    onBatch: (entry, r) => {
      metrics.batch(entry, r);
      stats.batch(entry, r);
    },
  });
  const limiter = createLimiter(config, metrics);
  const jsonParser =
    config.jsonParseThreads > 0 ? createJsonParser({ threads: config.jsonParseThreads }) : undefined;
  const admission = createAdmission({
    ...config.admission,
    maxWaitMs: config.requestTimeoutMs,
    maxBodyBytes: config.maxBodyBytes,
  });
  metrics.watch({
    admission: () => admission.stats(),
    pool: () => backend.stats(),
    queuedRows: () => predictor.queuedRows(),
    ...(l1 ? { l1: () => ({ entries: l1.size, bytes: l1.bytes }) } : {}),
    ...(redis ? { redisConnected: () => redis.connected() } : {}),
    ...(limiter ? { rateLimitShared: () => limiter.mode() === 'shared' } : {}),
    ...(audit
      ? {
          audit: () => ({
            queue: audit.queueDepth(),
            backlog: audit.backlogRows(),
            connected: audit.status().database_connected,
          }),
        }
      : {}),
  });

  // Empty until the models have loaded; then loaded versions resolve, and models unloaded through the
  // repository API answer 503.
  const repository = createModelRepository({
    backend,
    predictor,
    scan: scanVersions(config.modelsDir),
    defaultModel: config.defaultModel,
    onLoaded: (entries) => {
      for (const e of entries) metrics.modelLoaded(e);
    },
  });
  // Stages and traffic policies route requests that name no version; changes are kept in the audit store
  // and mirrored into the models directory (model.json, traffic.json).
  const lifecycleStore = createLifecycleStore({ modelsDir: config.modelsDir, store: auditStore });
  const load = loadMonitor(config.shadowMaxLoad);
  const lifecycle = createLifecycle({
    busy: load?.busy,
    registry: repository.registry,
    store: lifecycleStore,
    traffic: await lifecycleStore.loadTraffic(),
    // A stage change and a reload (which reads model.json) never interleave.
    exclusive: repository.exclusive,
  });
  const registry = lifecycle.registry;
  if (drift) metrics.watch({ drift: () => drift.snapshot(registry.all()) });
  let ready = false;
  let closing = false;
  const app = createApp(
    {
      registry,
      repository,
      lifecycle,
      logger: requestLogger,
      predictor,
      metrics,
      isReady: () => ready,
      isDraining: () => closing,
      health: healthOf(l1, redis, audit),
      cache,
      audit,
      auditReader: audit?.reader,
      admission,
      parseLargeJson: jsonParser?.parse,
      stats,
      docsAsset: createDocsAssets(),
      rateLimiter: limiter,
      clientAddress: clientAddress(config.access.trustProxyHops),
      responseHeader: nodeResponseHeader,
      sha256: (key) => hash('sha256', key, 'buffer'),
      tracer: tracing?.tracer,
      drift,
    },
    {
      maxBodyBytes: config.maxBodyBytes,
      maxRowsPerRequest: config.maxRowsPerRequest,
      serverVersion: VERSION,
      probability: config.probability,
      requestTimeoutMs: config.requestTimeoutMs,
      batching: config.batching,
      instances: config.poolSize,
      access: config.access,
      cors: config.cors,
      securityHeadersByRuntime: true,
      accessLogSample: config.log.accessSample,
    },
  );
  logAccess(config, limiter);
  const server = await listen(
    withSecurityHeaders(
      drainAware(app.fetch, () => closing),
      config.cors !== undefined,
    ),
    config,
    createShedder({
      inFlight: () => admission.stats().inFlight,
      maxInFlight: config.admission.maxInFlight,
      draining: () => closing,
      cors: config.cors !== undefined,
      metrics,
      logger: requestLogger,
    }),
  );
  const port = (server.address() as AddressInfo).port;

  const started = performance.now();
  const loading = repository.loadAll().then((loaded) => {
    ready = true;
    log('info', 'models ready', {
      models: loaded.map((e) => e.id),
      workers: config.poolSize,
      seconds: Math.round(performance.now() - started) / 1000,
    });
  });
  loading.catch((err) => {
    if (!closing) log('error', 'model loading failed', { error: String(err?.stack ?? err) });
  });
  // Once the models serve, a version copied into MODELS_DIR (or removed from it) is loaded (or let go).
  let watcher: ModelWatcher | undefined;
  if (config.watchModels) {
    loading.then(
      () => {
        if (closing) return;
        watcher = createModelWatcher({
          dir: config.modelsDir,
          onChange: (name) => reloadFromDisk(repository, name),
          onError: (err) => log('warn', 'MODELS_DIR watcher failed', { error: String(err) }),
        });
      },
      () => {},
    );
  }

  const close = async () => {
    if (closing) return;
    closing = true;
    watcher?.close();
    load?.stop();
    const deadline = performance.now() + config.shutdownTimeoutMs;
    // Not waiting for models still loading: SIGTERM during start-up ends it now (the pool is closed below).
    // Closing the listener resets every connection the kernel has completed but the server not yet accepted,
    // whose client may have sent its request already: under load, 2 SIGTERMs in 20 found 7 and 18 such
    // connections queued, and exactly their clients saw ECONNRESET. A load balancer goes on opening
    // connections for a while after SIGTERM (Kubernetes removes the pod's endpoint while it signals it), so
    // first keep accepting for SHUTDOWN_DELAY_MS, not ready and telling every client to close, until new
    // connections stop coming. A server that never became ready has no traffic to wait out.
    if (config.shutdownDelayMs > 0 && ready) await sleep(config.shutdownDelayMs);
    // Then stop listening, but keep open connections: closing an idle keep-alive connection races its
    // client's next request (a client whose request is already on the wire sees a reset; even closing only
    // connections idle for 250 ms did, on a loaded machine). Instead a request arriving on an open
    // connection is answered with Connection: close, so its client reconnects (to another replica), and an
    // idle connection closes at its keep-alive timeout, which every response announced (Keep-Alive:
    // timeout=N), so clients stop using them first. Past SHUTDOWN_TIMEOUT_MS, everything closes.
    const closed = new Promise<void>((resolve) => NetServer.prototype.close.call(server, () => resolve()));
    const force = setTimeout(() => server.closeAllConnections(), Math.max(0, deadline - performance.now()));
    await closed;
    clearTimeout(force);
    // A pool still starting (SIGTERM during start-up) closes once its loading workers are done, within what
    // is left of SHUTDOWN_TIMEOUT_MS.
    await Promise.race([
      backend.close(),
      sleep(Math.max(0, deadline - performance.now()), undefined, { ref: false }),
    ]);
    // The JSON thread is ended with the pool, except during start-up: ending it then (while the pool's
    // workers may still be creating sessions) aborted the process in 3 of 8 SIGTERMs in start-up
    // ("terminate called after throwing an instance of 'Napi::Error'", test/process.test.ts); the exit ends
    // it then. Not understood further.
    if (ready) await jsonParser?.close();
    // Every answered request's record is in the segment log, fsynced, before exit; the store is given what
    // is left of SHUTDOWN_TIMEOUT_MS (less a margin) to take what it can, and the rest waits in the log.
    await audit?.close(Math.max(250, deadline - performance.now() - 500));
    await redis?.close();
    limiter?.close();
    // Spans still buffered go out, within what is left of the shutdown time.
    await tracing?.shutdown(Math.max(100, deadline - performance.now()));
  };

  return {
    url: `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`,
    port,
    registry,
    backend,
    audit,
    ready: loading,
    close,
  };
}
