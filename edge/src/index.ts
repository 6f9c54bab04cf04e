/**
 * The Cloudflare Worker: the same Hono app as on Node (`createApp`), with onnxruntime-web as its backend,
 * an in-isolate LRU plus the Cache API as its cache, and a Queue as its audit sink.
 */

import { AsyncLocalStorage } from 'node:async_hooks';
import { z } from 'zod';
import {
  type AccessConfig,
  createApp,
  createDriftMonitor,
  createMemoryTier,
  createModelStats,
  createPredictor,
  createRegistry,
  createTieredCache,
  describeModel,
  type ModelMetadata,
  noopMetrics,
  parseKeys,
  type RateLimiter,
  type RatePolicy,
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
  /** API keys as `name:scopes:sha256` lines (npm run keys): a secret (wrangler secret put API_KEYS). */
  API_KEYS?: string;
  /** `keyed`: prediction routes need a key with the predict scope. Default: open. */
  AUTH_PREDICTIONS?: string;
  /** `true`: admin routes answer without a key (local development only). */
  ADMIN_OPEN?: string;
  /** Origins allowed cross-origin, comma-separated (`*` for any); unset = no CORS. */
  CORS_ORIGINS?: string;
  /**
   * Rate limits: the Workers rate-limiting bindings count (per key, per client address). Their limit and
   * period are set in wrangler.jsonc; RATE_LIMIT_PER_KEY / RATE_LIMIT_PER_ADDRESS and
   * RATE_LIMIT_WINDOW_SECONDS repeat them for the RateLimit headers, and switch each limit on.
   */
  KEY_RATE_LIMITER?: RateLimit;
  ADDRESS_RATE_LIMITER?: RateLimit;
  RATE_LIMIT_PER_KEY?: string;
  RATE_LIMIT_PER_ADDRESS?: string;
  RATE_LIMIT_WINDOW_SECONDS?: string;
}

/**
 * The limiter interface over the Workers rate-limiting bindings: they count per Cloudflare location and
 * say only allowed or not (no remaining count), so responses carry RateLimit-Policy but not RateLimit, and a
 * refused caller is told to retry after a window. A key's own rate cannot be set per key here.
 */
function bindingLimiter(env: Env): RateLimiter {
  return {
    async consume(subject, policy) {
      const binding = subject.startsWith('k:') ? env.KEY_RATE_LIMITER : env.ADDRESS_RATE_LIMITER;
      if (!binding) return { allowed: true, resetSeconds: 0 };
      const { success } = await binding.limit({ key: subject });
      return { allowed: success, resetSeconds: policy.windowSeconds };
    },
  };
}

const count = z.coerce.number().int().min(1).optional();
/** The Worker's access settings, checked as Node checks them: a typo stops the Worker, never opens it. */
const AccessVars = z.object({
  AUTH_PREDICTIONS: z.enum(['open', 'keyed']).default('open'),
  ADMIN_OPEN: z.enum(['true', 'false']).default('false'),
  RATE_LIMIT_PER_KEY: count,
  RATE_LIMIT_PER_ADDRESS: count,
  // The bindings' period is 10 or 60 s.
  RATE_LIMIT_WINDOW_SECONDS: z.coerce
    .number()
    .pipe(z.union([z.literal(10), z.literal(60)]))
    .default(60),
});

/** Who may call what, from the Worker's vars and secrets; throws naming what is wrong. */
export function accessOf(env: Env): AccessConfig {
  const blank = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = AccessVars.safeParse(blank);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid Worker configuration: ${issues.join('; ')}`);
  }
  const v = parsed.data;
  // A key's own rate cannot be enforced by a binding with one limit: every key gets the binding's.
  const keys = parseKeys(env.API_KEYS).map(({ rate: _rate, ...key }) => key);
  if (v.AUTH_PREDICTIONS === 'keyed' && !keys.some((k) => k.scopes.includes('predict'))) {
    throw new Error('invalid Worker configuration: AUTH_PREDICTIONS=keyed with no predict key in API_KEYS');
  }
  const policy = (points: number | undefined, binding: RateLimit | undefined): RatePolicy | undefined =>
    points && binding ? { points, windowSeconds: v.RATE_LIMIT_WINDOW_SECONDS } : undefined;
  return {
    keys,
    keyedPredictions: v.AUTH_PREDICTIONS === 'keyed',
    openAdmin: v.ADMIN_OPEN === 'true',
    keyRate: policy(v.RATE_LIMIT_PER_KEY, env.KEY_RATE_LIMITER),
    anonymousRate: policy(v.RATE_LIMIT_PER_ADDRESS, env.ADDRESS_RATE_LIMITER),
  };
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
  // Settings first: a misconfigured Worker fails before it loads a model.
  const access = accessOf(env);
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
  // Drift per isolate, against the references in the bundled models' model.json (no capture: an isolate's
  // first rows are too few, and it keeps nothing across restarts).
  const drift = createDriftMonitor({ windowRows: 10_000, minRows: 1000, psiThreshold: 0.2, captureRows: 0 });
  const predictor = createPredictor({
    backend,
    batching: false,
    onBatch: (e, r) => stats.batch(e, r),
    drift,
  });
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
      drift,
      rateLimiter: bindingLimiter(env),
      clientAddress: (c) => c.req.header('cf-connecting-ip'),
      health: async () => ({
        runtime: 'cloudflare-workers',
        redis_connected: false,
        database_connected: Boolean(env.AUDIT_QUEUE),
        audit_pending: audit.pending(),
        audit_spilled: audit.stats().spilled,
        audit_dropped: audit.stats().dropped,
      }),
    },
    {
      maxBodyBytes: 4 * 1024 * 1024,
      maxRowsPerRequest: 10_000,
      serverVersion: '0.1.0',
      singleFlight: false,
      access,
      cors: env.CORS_ORIGINS ? { origins: env.CORS_ORIGINS.split(',').map((o) => o.trim()) } : undefined,
    },
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
