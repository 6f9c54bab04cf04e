/**
 * Every metric the Node server exports, declared in one table. Events (requests, batches, cache lookups,
 * Redis calls, audit writes) are recorded as they happen; levels (queues, pool, cache size, connections)
 * are read from their components' getters at scrape time, each concern registered once with `watch`.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AdmissionStats } from '../core/admission.js';
import type { BackendStats } from '../core/backend.js';
import type { BatchReport } from '../core/batcher.js';
import type { CacheObserver } from '../core/cache.js';
import type { DriftReport } from '../core/drift.js';
import type { AppMetrics } from '../core/metrics.js';
import type { ModelEntry } from '../core/registry.js';
import type { AuditObserver } from './audit/audit-log.js';
import type { RedisObserver } from './redis-tier.js';

const LATENCY = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const FAST = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];
const MODEL = ['model', 'version'] as const;

interface Spec {
  name: string;
  kind: 'counter' | 'histogram' | 'gauge';
  help: string;
  labels?: readonly string[];
  buckets?: number[];
}

/** The table: every metric's name, kind, help and labels. */
export const METRICS = {
  httpRequests: {
    name: 'onnxserve_http_requests_total',
    kind: 'counter',
    help: 'HTTP requests answered, by route, method and status',
    labels: ['route', 'method', 'status'],
  },
  httpDuration: {
    name: 'onnxserve_http_request_duration_seconds',
    kind: 'histogram',
    help: 'HTTP request duration in seconds, by route and method',
    labels: ['route', 'method'],
    buckets: LATENCY,
  },
  errors: {
    name: 'onnxserve_errors_total',
    kind: 'counter',
    help: 'Error responses by code',
    labels: ['code'],
  },
  rows: { name: 'onnxserve_inference_rows_total', kind: 'counter', help: 'Rows inferred', labels: MODEL },
  batchRows: {
    name: 'onnxserve_batch_rows',
    kind: 'histogram',
    help: 'Rows per executed batch',
    labels: MODEL,
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384],
  },
  batchFailures: {
    name: 'onnxserve_batch_failures_total',
    kind: 'counter',
    help: 'Batches whose execution failed',
    labels: MODEL,
  },
  queueWait: {
    name: 'onnxserve_queue_wait_seconds',
    kind: 'histogram',
    help: 'Seconds a request waited in the batcher before its batch was dispatched',
    labels: MODEL,
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
  },
  compute: {
    name: 'onnxserve_compute_seconds',
    kind: 'histogram',
    help: 'Seconds from dispatch to results for a batch (pool queue, transfer and inference)',
    labels: MODEL,
    buckets: FAST,
  },
  modelLoad: {
    name: 'onnxserve_model_load_seconds',
    kind: 'gauge',
    help: 'Seconds taken to load and warm a model version',
    labels: MODEL,
  },
  modelInfo: {
    name: 'onnxserve_model_info',
    kind: 'gauge',
    help: 'Loaded model versions (value 1), with their file hash',
    labels: ['model', 'version', 'sha256'],
  },
  queuedRows: { name: 'onnxserve_batcher_queued_rows', kind: 'gauge', help: 'Rows waiting in batchers' },
  requestsInFlight: {
    name: 'onnxserve_requests_in_flight',
    kind: 'gauge',
    help: 'Prediction requests between arrival and answer (bounded by MAX_INFLIGHT_REQUESTS)',
  },
  heavyActive: {
    name: 'onnxserve_heavy_requests_active',
    kind: 'gauge',
    help: 'Large-body requests being read, run or answered (bounded by HEAVY_MAX_CONCURRENT)',
  },
  heavyWaiting: {
    name: 'onnxserve_heavy_requests_waiting',
    kind: 'gauge',
    help: 'Large-body requests waiting for their turn, body unread (bounded by HEAVY_MAX_WAITING)',
  },
  poolUtilization: {
    name: 'onnxserve_pool_utilization',
    kind: 'gauge',
    help: 'Busy fraction of the worker pool over the last 5 s (0..1), as the workers time their runs',
  },
  poolBusySeconds: {
    name: 'onnxserve_pool_busy_seconds_total',
    kind: 'counter',
    help: 'Seconds each worker thread has spent running models; rate() of it is that worker’s utilization',
    labels: ['worker'],
  },
  poolQueue: {
    name: 'onnxserve_pool_queued_batches',
    kind: 'gauge',
    help: 'Batches waiting for a free worker',
  },
  poolWorkers: { name: 'onnxserve_pool_workers_live', kind: 'gauge', help: 'Live worker threads' },
  cacheLookups: {
    name: 'onnxserve_cache_lookups_total',
    kind: 'counter',
    help: 'Cache lookups by tier and result (hit, miss)',
    labels: ['tier', 'result'],
  },
  cacheL1Entries: {
    name: 'onnxserve_cache_l1_entries',
    kind: 'gauge',
    help: 'Entries in the in-process cache',
  },
  cacheL1Bytes: {
    name: 'onnxserve_cache_l1_bytes',
    kind: 'gauge',
    help: 'Approximate bytes held by the in-process cache',
  },
  redisCalls: {
    name: 'onnxserve_redis_calls_total',
    kind: 'counter',
    help: 'Redis calls by operation and result (ok, error: failures, timeouts and open-circuit skips)',
    labels: ['op', 'result'],
  },
  redisSeconds: {
    name: 'onnxserve_redis_call_seconds',
    kind: 'histogram',
    help: 'Seconds per Redis call (one call serves every request of an event-loop turn)',
    labels: ['op'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
  },
  redisConnected: {
    name: 'onnxserve_redis_connected',
    kind: 'gauge',
    help: '1 when Redis is connected and its circuit is not open',
  },
  auditQueue: {
    name: 'onnxserve_audit_queue_depth',
    kind: 'gauge',
    help: 'Audit records in memory, not yet handed to the log writer (at most AUDIT_CAPTURE_MS of them)',
  },
  auditWritten: {
    name: 'onnxserve_audit_rows_written_total',
    kind: 'counter',
    help: 'Audit records written',
  },
  auditFlush: {
    name: 'onnxserve_audit_flush_seconds',
    kind: 'histogram',
    help: 'Seconds per audit batch written to the store (COPY, or a SQLite transaction)',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
  },
  auditFailures: {
    name: 'onnxserve_audit_write_failures_total',
    kind: 'counter',
    help: 'Audit records in batches the store failed to take (they wait in the segment log and are retried)',
  },
  auditDeadLetter: {
    name: 'onnxserve_audit_dead_letter_total',
    kind: 'counter',
    help: 'Audit records the store refused for their data, set aside in the dead-letter file',
  },
  auditDropped: {
    name: 'onnxserve_audit_dropped_total',
    kind: 'counter',
    help: 'Audit records lost, by reason: disk_full (the segment log could not be written), log_full (over AUDIT_LOG_MAX_BYTES), overflow (the writer thread fell AUDIT_MAX_QUEUE_BYTES behind), torn (cut short by a crash)',
    labels: ['reason'],
  },
  auditBacklog: {
    name: 'onnxserve_audit_backlog_rows',
    kind: 'gauge',
    help: 'Audit records in the segment log on disk, not yet in the store',
  },
  databaseConnected: {
    name: 'onnxserve_database_connected',
    kind: 'gauge',
    help: '1 when the audit store takes writes',
  },
  accessRefused: {
    name: 'onnxserve_access_refused_total',
    kind: 'counter',
    help: 'Requests refused by access control, by reason (missing_key, unknown_key, scope, admin_disabled, rate_limited) and key name (anonymous, unknown)',
    labels: ['reason', 'key'],
  },
  rateLimitShared: {
    name: 'onnxserve_rate_limit_shared',
    kind: 'gauge',
    help: '1 while rate limits are counted in Redis (one limit for every replica); 0 while counted in process',
  },
  driftFeaturePsi: {
    name: 'onnxserve_drift_feature_psi',
    kind: 'gauge',
    help: 'Population stability index of an input feature over the drift window against its reference (0.2 and above: drifted)',
    labels: ['model', 'version', 'feature'],
  },
  driftFeatureKs: {
    name: 'onnxserve_drift_feature_ks',
    kind: 'gauge',
    help: 'Kolmogorov-Smirnov statistic of an input feature over the drift window against its reference (at the reference bins)',
    labels: ['model', 'version', 'feature'],
  },
  driftPredictionPsi: {
    name: 'onnxserve_drift_prediction_psi',
    kind: 'gauge',
    help: 'Population stability index of the predictions over the drift window: series "score" (probability or value) and "class" (predicted classes)',
    labels: ['model', 'version', 'series'],
  },
  driftPredictionKs: {
    name: 'onnxserve_drift_prediction_ks',
    kind: 'gauge',
    help: 'Kolmogorov-Smirnov statistic of the prediction scores over the drift window against the reference',
    labels: MODEL,
  },
  driftPredictionMean: {
    name: 'onnxserve_drift_prediction_mean',
    kind: 'gauge',
    help: 'Mean prediction score over the drift window (seed 000: ml_prediction_mean)',
    labels: MODEL,
  },
  driftWindowRows: {
    name: 'onnxserve_drift_window_rows',
    kind: 'gauge',
    help: 'Rows in the drift window of a model version with a reference (statistics once DRIFT_MIN_ROWS are in)',
    labels: MODEL,
  },
} as const satisfies Record<string, Spec>;

type Key = keyof typeof METRICS;
type KeysOf<K extends Spec['kind']> = { [P in Key]: (typeof METRICS)[P]['kind'] extends K ? P : never }[Key];

/** Metric names by key, for tests, dashboards and alerts. */
export const METRIC = Object.fromEntries(Object.entries(METRICS).map(([k, s]) => [k, s.name])) as {
  [P in Key]: (typeof METRICS)[P]['name'];
};

/** The levels read at scrape time, one getter per concern; each absent when that part is off. */
export interface MetricSources {
  admission?: () => AdmissionStats;
  pool?: () => BackendStats;
  queuedRows?: () => number;
  l1?: () => { entries: number; bytes: number };
  redisConnected?: () => boolean;
  rateLimitShared?: () => boolean;
  audit?: () => { queue: number; backlog: number; connected: boolean };
  /** Every loaded tabular version's drift report. */
  drift?: () => DriftReport[];
}

export type PromMetrics = AppMetrics &
  CacheObserver &
  RedisObserver &
  AuditObserver & {
    registry: Registry;
    /** Register scrape-time readers for the components that exist. */
    watch(sources: MetricSources): void;
    batch(entry: ModelEntry, report: BatchReport): void;
    modelLoaded(entry: ModelEntry): void;
  };

export function createPromMetrics(opts: { defaultMetrics?: boolean } = {}): PromMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'onnxserve_' });
  const registers = [registry];
  const base = (k: Key) => {
    const s: Spec = METRICS[k];
    return { name: s.name, help: s.help, labelNames: (s.labels ?? []) as string[], registers };
  };
  const counter = (k: KeysOf<'counter'>) => new Counter(base(k));
  const histogram = (k: KeysOf<'histogram'>) => new Histogram({ ...base(k), buckets: METRICS[k].buckets });
  const gauge = (k: KeysOf<'gauge'>, read?: () => number) =>
    new Gauge({
      ...base(k),
      ...(read
        ? {
            collect(this: Gauge) {
              this.set(read());
            },
          }
        : {}),
    });

  const httpRequests = counter('httpRequests');
  const httpDuration = histogram('httpDuration');
  const errors = counter('errors');
  const rows = counter('rows');
  const batchRows = histogram('batchRows');
  const batchFailures = counter('batchFailures');
  const queueWait = histogram('queueWait');
  const compute = histogram('compute');
  const modelLoad = gauge('modelLoad');
  const modelInfo = gauge('modelInfo');
  const cacheLookups = counter('cacheLookups');
  const redisCalls = counter('redisCalls');
  const redisSeconds = histogram('redisSeconds');
  const auditWritten = counter('auditWritten');
  const auditFlush = histogram('auditFlush');
  const auditFailures = counter('auditFailures');
  const auditDeadLetter = counter('auditDeadLetter');
  const auditDropped = counter('auditDropped');
  const accessRefused = counter('accessRefused');

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

  let scrapes = 0;
  /** Drift gauges, set from the reports at scrape time (only versions loaded now; statistics once due). */
  const watchDrift = (read: () => DriftReport[]) => {
    // One reading serves every drift gauge of a scrape (render() counts scrapes).
    let reports: DriftReport[] = [];
    let readAt = -1;
    const current = () => {
      if (readAt !== scrapes) {
        reports = read();
        readAt = scrapes;
      }
      return reports;
    };
    const labeled = (k: KeysOf<'gauge'>, fill: (g: Gauge, reports: DriftReport[]) => void) =>
      new Gauge({
        ...base(k),
        collect(this: Gauge) {
          this.reset();
          fill(this, current());
        },
      });
    labeled('driftWindowRows', (g, reports) => {
      for (const r of reports) if (r.reference) g.labels(r.model, r.version).set(r.window.rows);
    });
    labeled('driftFeaturePsi', (g, reports) => {
      for (const r of reports) for (const f of r.features) g.labels(r.model, r.version, f.name).set(f.psi);
    });
    labeled('driftFeatureKs', (g, reports) => {
      for (const r of reports) for (const f of r.features) g.labels(r.model, r.version, f.name).set(f.ks);
    });
    labeled('driftPredictionPsi', (g, reports) => {
      for (const r of reports) {
        if (r.prediction) g.labels(r.model, r.version, 'score').set(r.prediction.psi);
        if (r.classes) g.labels(r.model, r.version, 'class').set(r.classes.psi);
      }
    });
    labeled('driftPredictionKs', (g, reports) => {
      for (const r of reports) if (r.prediction) g.labels(r.model, r.version).set(r.prediction.ks);
    });
    labeled('driftPredictionMean', (g, reports) => {
      for (const r of reports) {
        if (r.prediction?.mean !== null && r.prediction?.mean !== undefined) {
          g.labels(r.model, r.version).set(r.prediction.mean);
        }
      }
    });
  };

  return {
    registry,
    watch(s) {
      if (s.queuedRows) gauge('queuedRows', s.queuedRows);
      if (s.admission) {
        const admission = s.admission;
        gauge('requestsInFlight', () => admission().inFlight);
        gauge('heavyActive', () => admission().heavyActive);
        gauge('heavyWaiting', () => admission().heavyWaiting);
      }
      if (s.pool) {
        const pool = s.pool;
        gauge('poolUtilization', () => pool().utilization);
        gauge('poolQueue', () => pool().queuedBatches);
        gauge('poolWorkers', () => pool().liveWorkers);
        // A counter whose value the pool keeps: set at scrape time from the workers' own totals.
        new Counter({
          ...base('poolBusySeconds'),
          collect(this: Counter) {
            const totals = pool().busySeconds ?? {};
            this.reset();
            for (const [worker, seconds] of Object.entries(totals)) this.labels(worker).inc(seconds);
          },
        });
      }
      if (s.l1) {
        const l1 = s.l1;
        gauge('cacheL1Entries', () => l1().entries);
        gauge('cacheL1Bytes', () => l1().bytes);
        // Series exist from the start, so rate() and alerts see them before the first lookup.
        for (const tier of ['l1', 'l2'])
          for (const result of ['hit', 'miss']) cacheLookups.labels(tier, result).inc(0);
      }
      if (s.redisConnected) {
        const connected = s.redisConnected;
        gauge('redisConnected', () => (connected() ? 1 : 0));
        for (const op of ['mget', 'set', 'ping'])
          for (const result of ['ok', 'error']) redisCalls.labels(op, result).inc(0);
      }
      if (s.rateLimitShared) {
        const shared = s.rateLimitShared;
        gauge('rateLimitShared', () => (shared() ? 1 : 0));
      }
      if (s.drift) watchDrift(s.drift);
      if (s.audit) {
        const audit = s.audit;
        gauge('auditQueue', () => audit().queue);
        gauge('auditBacklog', () => audit().backlog);
        gauge('databaseConnected', () => (audit().connected ? 1 : 0));
        auditWritten.inc(0);
        auditFailures.inc(0);
        auditDeadLetter.inc(0);
        for (const reason of ['disk_full', 'log_full', 'overflow', 'torn'])
          auditDropped.labels(reason).inc(0);
      }
    },
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
    refused(reason, key) {
      accessRefused.labels(reason, key).inc();
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
    written(n) {
      auditWritten.inc(n);
    },
    flushed(seconds) {
      auditFlush.observe(seconds);
    },
    failed(n) {
      auditFailures.inc(n);
    },
    deadLettered(n) {
      auditDeadLetter.inc(n);
    },
    dropped(n, reason) {
      auditDropped.labels(reason).inc(n);
    },
    async render() {
      scrapes++;
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
