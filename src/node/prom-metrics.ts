/** Every metric the Node server exports, by name, in one place. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { BackendStats } from '../core/backend.js';
import type { BatchReport } from '../core/batcher.js';
import type { AppMetrics } from '../core/metrics.js';
import type { ModelEntry } from '../core/registry.js';

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
} as const;

const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export interface PromMetricsOptions {
  stats: () => BackendStats;
  queuedRows: () => number;
  defaultMetrics?: boolean;
}

export type PromMetrics = AppMetrics & {
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
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
