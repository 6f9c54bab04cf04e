import type { InferenceBackend } from './backend.js';
import { type BatcherOptions, type BatchReport, MicroBatcher, timedRuns } from './batcher.js';
import type { DriftMonitor } from './drift.js';
import { ServeError } from './errors.js';
import type { ModelEntry } from './registry.js';
import type { Tensor } from './tensor.js';
import { childScope, type ItemTiming, inferenceSpans, startSpan, type TraceScope } from './tracing.js';

export interface Predictor {
  /** Run rows through a model: batched with other requests where the model allows it. */
  infer(
    entry: ModelEntry,
    inputs: Record<string, Tensor>,
    rows: number,
    /** performance.now() past which the answer is no longer wanted (504 ERR_DEADLINE_EXCEEDED). */
    deadline?: number,
    /** The request's trace: the inference gets a span, with its queue wait and model runs beneath. */
    trace?: TraceScope,
  ): Promise<Record<string, Tensor>>;
  /** Rows waiting in every batcher. */
  queuedRows(): number;
  /** Resolves once no inference for these model ids is waiting or running. */
  settled(ids: readonly string[]): Promise<void>;
}

export interface PredictorOptions {
  backend: InferenceBackend;
  /**
   * Batch rows across requests, or `false` to run each request on its own: where one request must not
   * wait on work another started (Cloudflare Workers cancel such a request as hung).
   */
  batching: BatcherOptions | false;
  onBatch?: (entry: ModelEntry, report: BatchReport) => void;
  /** Drift detection: which batches are counted (and by which bins), and where their counts go. */
  drift?: DriftMonitor;
}

/** A failure of the model itself (a worker that died, a runtime error): 500 ERR_INFERENCE, this batch only. */
const inferenceFailed = (entry: ModelEntry) => (err: unknown) => {
  if (err instanceof ServeError) throw err;
  throw new ServeError('ERR_INFERENCE', `model ${entry.id} failed to run this batch`, { cause: err });
};

/** A copy of a request's input tensors (the originals may be handed to a worker thread, and detached). */
const copyInputs = (inputs: Record<string, Tensor>) => {
  const copy: Record<string, Tensor> = {};
  for (const name in inputs) {
    const t = inputs[name]!;
    copy[name] = { type: t.type, dims: t.dims, data: t.data.slice() } as Tensor;
  }
  return copy;
};

export function createPredictor({ backend, batching, onBatch, drift }: PredictorOptions): Predictor {
  const batchers = new Map<string, MicroBatcher>();
  const reportBatch = (entry: ModelEntry, r: BatchReport) => {
    drift?.batch(entry, r);
    onBatch?.(entry, r);
  };
  const histogramOf = drift ? (entry: ModelEntry) => () => drift.spec(entry) : () => undefined;
  const batcherFor = (entry: ModelEntry) => {
    let b = batchers.get(entry.id);
    if (!b) {
      b = new MicroBatcher(
        entry.id,
        (inputs, opts) => backend.run(entry.id, inputs, opts).catch(inferenceFailed(entry)),
        batching as BatcherOptions,
        (r) => reportBatch(entry, r),
        histogramOf(entry),
      );
      batchers.set(entry.id, b);
    }
    return b;
  };
  /** Inferences not yet settled, by model id, and who waits for some of them to reach none. */
  const pending = new Map<string, number>();
  let idle: (() => void)[] = [];
  const track = (id: string, p: Promise<Record<string, Tensor>>) => {
    pending.set(id, (pending.get(id) ?? 0) + 1);
    const done = () => {
      const n = pending.get(id)! - 1;
      if (n > 0) pending.set(id, n);
      else pending.delete(id);
      const waiting = idle;
      idle = [];
      for (const check of waiting) check();
    };
    p.then(done, done);
    return p;
  };
  const run = (
    entry: ModelEntry,
    inputs: Record<string, Tensor>,
    rows: number,
    deadline: number | undefined,
    observe: ((t: ItemTiming) => void) | undefined,
  ): Promise<Record<string, Tensor>> => {
    if (entry.batchable && batching !== false)
      return batcherFor(entry).submit(inputs, rows, deadline, observe);
    // Unbatched: a batch of this one request, reported as the batcher reports its batches.
    const arrived = performance.now();
    const { runs, histogram, startedAt, timed } = timedRuns(drift && (() => drift.spec(entry)));
    const report = (failed: boolean) => {
      reportBatch(entry, {
        rows,
        requests: 1,
        queueWaitMs: [0],
        queueMs: failed ? [] : [(startedAt() ?? arrived) - arrived],
        computeMs: performance.now() - arrived,
        runs: failed ? [] : runs,
        histogram: failed ? undefined : histogram,
        failed,
      });
      observe?.({
        enqueuedAt: arrived,
        dispatchedAt: arrived,
        batchRows: rows,
        batchRequests: 1,
        runs: failed ? [] : runs,
        failed,
      });
    };
    return backend.run(entry.id, inputs, timed(rows)).then(
      (outputs) => {
        report(false);
        return outputs;
      },
      (err) => {
        report(true);
        return inferenceFailed(entry)(err);
      },
    );
  };
  /**
   * A traced inference: a span from submission to outputs, and beneath it the batcher's queue wait and each
   * model run as the executing thread timed it (spans with explicit times, made once the batch has run).
   */
  const traced = (
    entry: ModelEntry,
    inputs: Record<string, Tensor>,
    rows: number,
    deadline: number | undefined,
    trace: TraceScope,
  ) => {
    const span = startSpan(trace, 'inference', {
      'onnxserve.model': entry.name,
      'onnxserve.model_version': entry.version,
      'onnxserve.rows': rows,
    });
    const batched = entry.batchable && batching !== false;
    const observe = span.isRecording()
      ? (t: ItemTiming) => inferenceSpans(childScope(trace, span), t, rows, batched)
      : undefined;
    return run(entry, inputs, rows, deadline, observe).finally(() => span.end());
  };
  return {
    infer(entry, inputs, rows, deadline, trace) {
      // While a version captures its drift reference, its requests' inputs are copied (they may be
      // transferred to a worker thread, and detached, before the outputs come back).
      const capture = drift?.capture(entry);
      const copy = capture ? copyInputs(inputs) : undefined;
      let p = trace
        ? traced(entry, inputs, rows, deadline, trace)
        : run(entry, inputs, rows, deadline, undefined);
      if (capture) {
        p = p.then((outputs) => {
          capture(copy!, outputs, rows);
          return outputs;
        });
      }
      return track(entry.id, p);
    },
    settled(ids) {
      return new Promise<void>((resolve) => {
        const check = () => {
          if (ids.some((id) => pending.has(id))) idle.push(check);
          else resolve();
        };
        check();
      });
    },
    queuedRows() {
      let n = 0;
      for (const b of batchers.values()) n += b.queuedRows;
      return n;
    },
  };
}
