/**
 * The Cloudflare Worker: the same Hono app as on Node (`createApp`), with onnxruntime-web as its backend,
 * an in-isolate LRU plus the Cache API as its cache, and a Queue as its audit sink.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import {
  createApp,
  createMemoryTier,
  createModelStats,
  createPredictor,
  createRegistry,
  createTieredCache,
  describeModel,
  type ModelMetadata,
  noopMetrics,
} from '../../src/core/index.js';
import { type AuditMessageBody, consumeAuditBatch } from './audit-consumer.js';
import { createQueueAuditSink } from './audit-queue.js';
import { createCacheApiTier } from './cache-api-tier.js';
import { BUNDLED } from './models.js';
import { createOrtWebBackend } from './ort-web-backend.js';

export interface Env {
  /** Models too large to bundle: `models/<name>/<version>/model.onnx` (and `model.json`) in this bucket. */
  MODELS?: R2Bucket;
  /** Audit records as JSON text, or pointers to records kept in AUDIT_SPILL (edge/src/audit-queue.ts). */
  AUDIT_QUEUE?: Queue<string>;
  /** Audit records too large for a queue message, until the consumer has written them. */
  AUDIT_SPILL?: R2Bucket;
  /** Postgres for the audit queue's consumer. */
  HYPERDRIVE?: Hyperdrive;
  DEFAULT_MODEL?: string;
  CACHE_TTL_SECONDS?: string;
}

const hex = (buf: ArrayBuffer) =>
  [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');

interface Source {
  name: string;
  version: string;
  bytes: ArrayBuffer;
  metadata: ModelMetadata | undefined;
}

async function r2Models(bucket: R2Bucket | undefined): Promise<Source[]> {
  if (!bucket) return [];
  const found: Source[] = [];
  const listed = await bucket.list({ prefix: 'models/' });
  for (const obj of listed.objects) {
    const m = /^models\/([A-Za-z0-9][\w.-]*)\/([\w.-]+)\/model\.onnx$/.exec(obj.key);
    if (!m) continue;
    const [, name, version] = m as unknown as [string, string, string];
    const bytes = await (await bucket.get(obj.key))!.arrayBuffer();
    const meta = await bucket.get(`models/${name}/${version}/model.json`);
    found.push({ name, version, bytes, metadata: meta ? ((await meta.json()) as ModelMetadata) : undefined });
  }
  return found;
}

/** Everything one isolate holds: built on its first request, reused by the rest. */
export async function buildState(env: Env) {
  const started = Date.now();
  const backend = createOrtWebBackend();
  const sources: Source[] = [...BUNDLED, ...(await r2Models(env.MODELS))];
  const signatures = await backend.load(
    sources.map((s) => ({ id: `${s.name}@${s.version}`, bytes: new Uint8Array(s.bytes) })),
  );
  const entries = await Promise.all(
    sources.map(async (s) =>
      describeModel({
        name: s.name,
        version: s.version,
        sha256: hex(await crypto.subtle.digest('SHA-256', s.bytes)),
        signature: signatures.get(`${s.name}@${s.version}`)!,
        metadata: s.metadata,
        loadSeconds: (Date.now() - started) / 1000,
      }),
    ),
  );
  const names = new Set(entries.map((e) => e.name));
  const defaultModel = env.DEFAULT_MODEL && names.has(env.DEFAULT_MODEL) ? env.DEFAULT_MODEL : undefined;
  const registry = createRegistry(entries, { defaultModel });
  // Each request runs its own rows: workerd cancels, as hung, a request that waits on work another request
  // started (a shared batch, a shared in-flight miss). The isolate is single-threaded anyway.
  const stats = createModelStats();
  const predictor = createPredictor({ backend, batching: false, onBatch: (e, r) => stats.batch(e, r) });
  const ttlSeconds = Number(env.CACHE_TTL_SECONDS ?? 3600);
  const l2 = createCacheApiTier(caches.default, {
    ttlSeconds,
    waitUntil: (p) => requestContext.getStore()?.waitUntil(p),
  });
  const cache = createTieredCache(
    createMemoryTier({ maxEntries: 20_000, maxBytes: 16 * 1024 * 1024, ttlMs: ttlSeconds * 1000 }),
    l2,
  );
  const audit = createQueueAuditSink(env.AUDIT_QUEUE, { spill: env.AUDIT_SPILL });
  const app = createApp(
    {
      registry,
      predictor,
      metrics: noopMetrics,
      isReady: () => true,
      cache,
      audit,
      // This isolate's own counts: each isolate keeps its statistics, as each keeps its cache's first tier.
      stats,
      health: async () => ({
        runtime: 'cloudflare-workers',
        redis_connected: false,
        database_connected: Boolean(env.AUDIT_QUEUE),
        audit_pending: audit.pending(),
        audit_spilled: audit.stats().spilled,
        audit_dropped: audit.stats().dropped,
      }),
    },
    { maxBodyBytes: 4 * 1024 * 1024, maxRowsPerRequest: 10_000, serverVersion: '0.1.0', singleFlight: false },
  );
  return { app, audit, coldStartMs: Date.now() - started };
}

let state: ReturnType<typeof buildState> | undefined;
/** The current request's context: background work (cache writes) is tied to the request that made it. */
const requestContext = new AsyncLocalStorage<ExecutionContext>();

export default {
  async fetch(request, env, ctx) {
    if (!state) {
      state = buildState(env);
      state.catch(() => {
        state = undefined; // the next request tries again
      });
    }
    const s = await state;
    const response = await requestContext.run(ctx, () => s.app.fetch(request, env, ctx));
    ctx.waitUntil(s.audit.flush());
    return response;
  },
  async queue(batch, env, _ctx) {
    await consumeAuditBatch(batch, env.HYPERDRIVE?.connectionString, env.AUDIT_SPILL);
  },
} satisfies ExportedHandler<Env, AuditMessageBody>;
