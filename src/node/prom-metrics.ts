/** Every metric the Node server exports, by name, in one place. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { BackendStats } from '../core/backend.js';
import type { BatchReport } from '../core/batcher.js';
import type { CacheObserver } from '../core/cache.js';
import type { AppMetrics } from '../core/metrics.js';
import type { ModelEntry } from '../core/registry.js';
import type { AuditObserver } from './audit/audit-log.js';
import type { RedisObserver } from './redis-tier.js';

export const METRIC = {
  httpRequests: 'onnxserve_http_requests_total',
  httpDuration: 'onnxserve_http_request_duration_seconds',
  errors: 'onnxserve_errors_total',
  rows: 'onnxserve_inference_rows_total',
  batchRows: 'onnxserve_batch_rows',
  batchFailures: 'onnxserve_batch_failures_total',
  queueWait: 'onnxserve_queue_wait_seconds',
  compute: 'onnxserve_compute_seconds',
  queuedRows: 'onnxserve_batcher_queued_rows',
  poolUtilization: 'onnxserve_pool_utilization',
  poolQueue: 'onnxserve_pool_queued_batches',
  poolWorkers: 'onnxserve_pool_workers_live',
  modelLoad: 'onnxserve_model_load_seconds',
  modelInfo: 'onnxserve_model_info',
  cacheLookups: 'onnxserve_cache_lookups_total',
  cacheL1Entries: 'onnxserve_cache_l1_entries',
  cacheL1Bytes: 'onnxserve_cache_l1_bytes',
  redisCalls: 'onnxserve_redis_calls_total',
  redisSeconds: 'onnxserve_redis_call_seconds',
  redisConnected: 'onnxserve_redis_connected',
  auditQueue: 'onnxserve_audit_queue_depth',
  auditWritten: 'onnxserve_audit_rows_written_total',
  auditFlush: 'onnxserve_audit_flush_seconds',
  auditFailures: 'onnxserve_audit_write_failures_total',
  auditSpool: 'onnxserve_audit_spool_rows',
  databaseConnected: 'onnxserve_database_connected',
} as const;

const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export interface PromMetricsOptions {
  stats: () => BackendStats;
  queuedRows: () => number;
  /** Read at scrape time; each absent when that part is off. */
  l1?: () => { entries: number; bytes: number };
  redisConnected?: () => boolean;
  audit?: () => { queue: number; spool: number; connected: boolean };
  defaultMetrics?: boolean;
}

export type PromMetrics = AppMetrics &
  CacheObserver &
  RedisObserver &
  AuditObserver & {
    registry: Registry;
    batch(entry: ModelEntry, report: BatchReport): void;
    modelLoaded(entry: ModelEntry): void;
  };

export function createPromMetrics(opts: PromMetricsOptions): PromMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'onnxserve_' });
  const registers = [registry];

  const httpRequests = new Counter({
    name: METRIC.httpRequests,
    help: 'HTTP requests answered, by route, method and status',
    labelNames: ['route', 'method', 'status'],
    registers,
  });
  const httpDuration = new Histogram({
    name: METRIC.httpDuration,
    help: 'HTTP request duration in seconds, by route and method',
    labelNames: ['route', 'method'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const errors = new Counter({
    name: METRIC.errors,
    help: 'Error responses by code',
    labelNames: ['code'],
    registers,
  });
  const rows = new Counter({
    name: METRIC.rows,
    help: 'Rows inferred, by model and version',
    labelNames: ['model', 'version'],
    registers,
  });
  const batchRows = new Histogram({
    name: METRIC.batchRows,
    help: 'Rows per executed batch',
    labelNames: ['model', 'version'],
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384],
    registers,
  });
  const batchFailures = new Counter({
    name: METRIC.batchFailures,
    help: 'Batches whose execution failed',
    labelNames: ['model', 'version'],
    registers,
  });
  const queueWait = new Histogram({
    name: METRIC.queueWait,
    help: 'Seconds a request waited in the batcher before its batch was dispatched',
    labelNames: ['model', 'version'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    registers,
  });
  const compute = new Histogram({
    name: METRIC.compute,
    help: 'Seconds from dispatch to results for a batch (pool queue, transfer and inference)',
    labelNames: ['model', 'version'],
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
    registers,
  });
  new Gauge({
    name: METRIC.queuedRows,
    help: 'Rows waiting in batchers',
    registers,
    collect() {
      this.set(opts.queuedRows());
    },
  });
  new Gauge({
    name: METRIC.poolUtilization,
    help: 'Busy fraction of the worker pool since start (0..1)',
    registers,
    collect() {
      this.set(opts.stats().utilization);
    },
  });
  new Gauge({
    name: METRIC.poolQueue,
    help: 'Batches waiting for a free worker',
    registers,
    collect() {
      this.set(opts.stats().queuedBatches);
    },
  });
  new Gauge({
    name: METRIC.poolWorkers,
    help: 'Live worker threads',
    registers,
    collect() {
      this.set(opts.stats().liveWorkers);
    },
  });
  const modelLoad = new Gauge({
    name: METRIC.modelLoad,
    help: 'Seconds taken to load and warm a model version',
    labelNames: ['model', 'version'],
    registers,
  });
  const modelInfo = new Gauge({
    name: METRIC.modelInfo,
    help: 'Loaded model versions (value 1), with their file hash',
    labelNames: ['model', 'version', 'sha256'],
    registers,
  });

  const cacheLookups = new Counter({
    name: METRIC.cacheLookups,
    help: 'Cache lookups by tier and result (hit, miss)',
    labelNames: ['tier', 'result'],
    registers,
  });
  const redisCalls = new Counter({
    name: METRIC.redisCalls,
    help: 'Redis calls by operation and result (ok, error: failures, timeouts and open-circuit skips)',
    labelNames: ['op', 'result'],
    registers,
  });
  const redisSeconds = new Histogram({
    name: METRIC.redisSeconds,
    help: 'Seconds per Redis call (one call serves every request of an event-loop turn)',
    labelNames: ['op'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers,
  });
  const auditWritten = new Counter({
    name: METRIC.auditWritten,
    help: 'Audit records written to the store',
    registers,
  });
  const auditFlush = new Histogram({
    name: METRIC.auditFlush,
    help: 'Seconds per audit batch insert',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers,
  });
  const auditFailures = new Counter({
    name: METRIC.auditFailures,
    help: 'Audit records whose write failed (they were spooled)',
    registers,
  });
  if (opts.l1) {
    const l1 = opts.l1;
    new Gauge({
      name: METRIC.cacheL1Entries,
      help: 'Entries in the in-process cache',
      registers,
      collect() {
        this.set(l1().entries);
      },
    });
    new Gauge({
      name: METRIC.cacheL1Bytes,
      help: 'Approximate bytes held by the in-process cache',
      registers,
      collect() {
        this.set(l1().bytes);
      },
    });
    for (const tier of ['l1', 'l2'])
      for (const result of ['hit', 'miss']) cacheLookups.labels(tier, result).inc(0);
  }
  if (opts.redisConnected) {
    const connected = opts.redisConnected;
    new Gauge({
      name: METRIC.redisConnected,
      help: '1 when Redis is connected and its circuit is not open',
      registers,
      collect() {
        this.set(connected() ? 1 : 0);
      },
    });
    for (const op of ['mget', 'set', 'ping'])
      for (const result of ['ok', 'error']) redisCalls.labels(op, result).inc(0);
  }
  if (opts.audit) {
    const audit = opts.audit;
    new Gauge({
      name: METRIC.auditQueue,
      help: 'Audit records waiting in memory',
      registers,
      collect() {
        this.set(audit().queue);
      },
    });
    new Gauge({
      name: METRIC.auditSpool,
      help: 'Audit records in the on-disk spool, waiting for the store',
      registers,
      collect() {
        this.set(audit().spool);
      },
    });
    new Gauge({
      name: METRIC.databaseConnected,
      help: '1 when the audit store takes writes',
      registers,
      collect() {
        this.set(audit().connected ? 1 : 0);
      },
    });
    auditWritten.inc(0);
    auditFailures.inc(0);
  }
  const lookupChildren = {
    l1: { hit: cacheLookups.labels('l1', 'hit'), miss: cacheLookups.labels('l1', 'miss') },
    l2: { hit: cacheLookups.labels('l2', 'hit'), miss: cacheLookups.labels('l2', 'miss') },
  };

  // Label lookups are the costly part of an observation: keep the children of hot label sets.
  const requestChildren = new Map<
    string,
    { count: Counter.Internal; duration: Histogram.Internal<string> }
  >();
  const modelChildren = new Map<
    string,
    {
      rows: Counter.Internal;
      batchRows: Histogram.Internal<string>;
      queueWait: Histogram.Internal<string>;
      compute: Histogram.Internal<string>;
    }
  >();
  const modelChild = (model: string, version: string) => {
    const key = `${model}\0${version}`;
    let c = modelChildren.get(key);
    if (!c) {
      const labels = { model, version };
      c = {
        rows: rows.labels(labels),
        batchRows: batchRows.labels(labels),
        queueWait: queueWait.labels(labels),
        compute: compute.labels(labels),
      };
      modelChildren.set(key, c);
    }
    return c;
  };

  return {
    registry,
    request(route, method, status, seconds) {
      const key = `${route}\0${method}\0${status}`;
      let c = requestChildren.get(key);
      if (!c) {
        c = {
          count: httpRequests.labels(route, method, String(status)),
          duration: httpDuration.labels(route, method),
        };
        requestChildren.set(key, c);
      }
      c.count.inc();
      c.duration.observe(seconds);
    },
    rows(model, version, n) {
      modelChild(model, version).rows.inc(n);
    },
    error(code) {
      errors.labels(code).inc();
    },
    batch(entry, report) {
      const c = modelChild(entry.name, entry.version);
      if (report.failed) batchFailures.labels(entry.name, entry.version).inc();
      c.batchRows.observe(report.rows);
      c.compute.observe(report.computeMs / 1000);
      for (const ms of report.queueWaitMs) c.queueWait.observe(ms / 1000);
    },
    modelLoaded(entry) {
      // Start each model's counters at zero, so rate() and alerts see a series before the first event.
      batchFailures.labels(entry.name, entry.version).inc(0);
      modelChild(entry.name, entry.version).rows.inc(0);
      modelLoad.labels(entry.name, entry.version).set(entry.loadSeconds);
      modelInfo.labels(entry.name, entry.version, entry.sha256).set(1);
    },
    lookup(tier, hits, misses) {
      if (hits) lookupChildren[tier].hit.inc(hits);
      if (misses) lookupChildren[tier].miss.inc(misses);
    },
    call(op, seconds, ok) {
      redisCalls.labels(op, ok ? 'ok' : 'error').inc();
      redisSeconds.labels(op).observe(seconds);
    },
    written(n, seconds) {
      auditWritten.inc(n);
      auditFlush.observe(seconds);
    },
    failed(n) {
      auditFailures.inc(n);
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
