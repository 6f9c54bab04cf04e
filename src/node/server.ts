import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { createApp } from '../core/app.js';
import type { InferenceBackend } from '../core/backend.js';
import { createMemoryTier, createTieredCache } from '../core/cache.js';
import { createPredictor } from '../core/predictor.js';
import { createRegistry, describeModel, type ModelEntry, type ModelRegistry } from '../core/registry.js';
import { createAuditLog } from './audit/audit-log.js';
import { createPgStore } from './audit/pg-store.js';
import { createPgliteStore } from './audit/pglite-store.js';
import { createSpool } from './audit/spool.js';
import type { ServerConfig } from './config.js';
import { scanModelRepository } from './model-store.js';
import { createPoolBackend } from './pool-backend.js';
import { createPromMetrics, type PromMetrics } from './prom-metrics.js';
import { createRedisTier } from './redis-tier.js';

export interface RunningServer {
  url: string;
  port: number;
  registry: ModelRegistry;
  backend: InferenceBackend;
  audit: ReturnType<typeof createAuditLog> | undefined;
  /** Resolves once every model is loaded and warmed in every worker. */
  ready: Promise<void>;
  /** Stop accepting, finish in-flight requests, close the pool. */
  close(): Promise<void>;
}

const VERSION = '0.1.0';

export const log = (level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}) =>
  console[level === 'info' ? 'log' : level](
    JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }),
  );

/** A registry that answers from whatever set of models is current: empty while loading. */
function swappableRegistry() {
  let current = createRegistry([]);
  const view: ModelRegistry = {
    get defaultModel() {
      return current.defaultModel;
    },
    names: () => current.names(),
    versions: (n) => current.versions(n),
    resolve: (n, v) => current.resolve(n, v),
    all: () => current.all(),
  };
  return { view, set: (r: ModelRegistry) => (current = r) };
}

/**
 * Listen at once (liveness answers while models load), then load every model into the pool; readiness
 * turns true when all workers hold warmed sessions.
 */
export async function startServer(config: ServerConfig): Promise<RunningServer> {
  const backend = createPoolBackend({ size: config.poolSize, intraOpNumThreads: config.intraOpNumThreads });
  const registry = swappableRegistry();
  let ready = false;
  let closing = false;
  const predictorRef: { queuedRows: () => number } = { queuedRows: () => 0 };
  // Observers are created before the metrics that implement them: forward through this reference.
  const observe: { m?: PromMetrics } = {};

  const l1 = config.cache.enabled ? createMemoryTier(config.cache.l1) : undefined;
  const redis =
    config.cache.enabled && config.cache.redis
      ? createRedisTier({
          ...config.cache.redis,
          observer: { call: (op, s, ok) => observe.m?.call(op, s, ok) },
        })
      : undefined;
  const cache = l1
    ? createTieredCache(l1, redis, { lookup: (t, h, m) => observe.m?.lookup(t, h, m) })
    : undefined;

  const audit = config.audit.enabled
    ? createAuditLog({
        store: config.audit.databaseUrl
          ? createPgStore({ url: config.audit.databaseUrl })
          : createPgliteStore({ dir: join(config.audit.dir, 'pglite') }),
        spool: createSpool(join(config.audit.dir, 'spool')),
        batchRows: config.audit.batchRows,
        flushMs: config.audit.flushMs,
        maxQueue: config.audit.maxQueue,
        retryMs: config.audit.retryMs,
        observer: { written: (n, s) => observe.m?.written(n, s), failed: (n) => observe.m?.failed(n) },
        log,
      })
    : undefined;

  const metrics = createPromMetrics({
    stats: () => backend.stats(),
    queuedRows: () => predictorRef.queuedRows(),
    ...(l1 ? { l1: () => ({ entries: l1.size, bytes: l1.bytes }) } : {}),
    ...(redis ? { redisConnected: () => redis.connected() } : {}),
    ...(audit
      ? {
          audit: () => ({
            queue: audit.queueDepth(),
            spool: audit.spoolRows(),
            connected: audit.status().database_connected,
          }),
        }
      : {}),
  });
  observe.m = metrics;
  const predictor = createPredictor({
    backend,
    batching: config.batching,
    onBatch: (entry, r) => metrics.batch(entry, r),
  });
  predictorRef.queuedRows = () => predictor.queuedRows();

  const health = async () => ({
    redis_connected: redis ? redis.connected() : false,
    cache: cache
      ? {
          l1_entries: l1!.size,
          l2: redis
            ? redis.connected()
              ? 'connected'
              : `unavailable (circuit ${redis.circuit()})`
            : 'not configured',
        }
      : 'off',
    ...(audit ? audit.status() : { database_connected: false, audit_store: 'off' }),
  });

  const app = createApp(
    { registry: registry.view, predictor, metrics, isReady: () => ready && !closing, health, cache, audit },
    {
      maxBodyBytes: config.maxBodyBytes,
      maxRowsPerRequest: config.maxRowsPerRequest,
      serverVersion: VERSION,
    },
  );
  const server = serve({ fetch: app.fetch, port: config.port, hostname: config.host }) as Server;
  await new Promise<void>((resolve, reject) => {
    if (server.listening) resolve();
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;

  const loading = (async () => {
    const started = performance.now();
    const stored = await scanModelRepository(config.modelsDir);
    const signatures = await backend.load(
      stored.map((m) => ({ id: `${m.name}@${m.version}`, path: m.path })),
    );
    const loadSeconds = (performance.now() - started) / 1000;
    const entries: ModelEntry[] = stored.map((m) =>
      describeModel({
        name: m.name,
        version: m.version,
        sha256: m.sha256,
        signature: signatures.get(`${m.name}@${m.version}`)!,
        metadata: m.metadata,
        loadSeconds,
      }),
    );
    registry.set(createRegistry(entries, { defaultModel: config.defaultModel }));
    for (const e of entries) metrics.modelLoaded(e);
    ready = true;
    log('info', 'models ready', {
      models: entries.map((e) => e.id),
      workers: config.poolSize,
      seconds: Math.round(loadSeconds * 1000) / 1000,
    });
  })();

  const close = async () => {
    if (closing) return;
    closing = true;
    await loading.catch(() => {});
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // Connections busy now go idle once their response is out; close them then rather than waiting out
    // keep-alive. Past the timeout, close everything.
    server.closeIdleConnections();
    const sweep = setInterval(() => server.closeIdleConnections(), 50);
    const force = setTimeout(() => server.closeAllConnections(), config.shutdownTimeoutMs);
    await closed;
    clearInterval(sweep);
    clearTimeout(force);
    await backend.close();
    // Every answered request's record is written, or spooled to disk, before exit.
    await audit?.close();
    await redis?.close();
  };

  loading.catch(async (err) => {
    log('error', 'model loading failed', { error: String(err?.stack ?? err) });
  });

  return {
    url: `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`,
    port,
    registry: registry.view,
    backend,
    audit,
    ready: loading,
    close,
  };
}
