import type { InferenceBackend } from './backend.js';
import { type BatcherOptions, type BatchReport, MicroBatcher, timedRuns } from './batcher.js';
import { ServeError } from './errors.js';
import type { ModelEntry } from './registry.js';
import type { Tensor } from './tensor.js';

export interface Predictor {
  /** Run rows through a model: batched with other requests where the model allows it. */
  infer(
    entry: ModelEntry,
    inputs: Record<string, Tensor>,
    rows: number,
    /** performance.now() past which the answer is no longer wanted (504 ERR_DEADLINE_EXCEEDED). */
    deadline?: number,
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
}

/** A failure of the model itself (a worker that died, a runtime error): 500 ERR_INFERENCE, this batch only. */
const inferenceFailed = (entry: ModelEntry) => (err: unknown) => {
  if (err instanceof ServeError) throw err;
  throw new ServeError('ERR_INFERENCE', `model ${entry.id} failed to run this batch`, { cause: err });
};

export function createPredictor({ backend, batching, onBatch }: PredictorOptions): Predictor {
  const batchers = new Map<string, MicroBatcher>();
  const batcherFor = (entry: ModelEntry) => {
    let b = batchers.get(entry.id);
    if (!b) {
      b = new MicroBatcher(
        entry.id,
        (inputs, opts) => backend.run(entry.id, inputs, opts).catch(inferenceFailed(entry)),
        batching as BatcherOptions,
        (r) => onBatch?.(entry, r),
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
  ): Promise<Record<string, Tensor>> => {
    if (entry.batchable && batching !== false) return batcherFor(entry).submit(inputs, rows, deadline);
    // Unbatched: a batch of this one request, reported as the batcher reports its batches.
    const arrived = performance.now();
    const { runs, startedAt, timed } = timedRuns();
    const report = (failed: boolean) =>
      onBatch?.(entry, {
        rows,
        requests: 1,
        queueWaitMs: [0],
        queueMs: failed ? [] : [(startedAt() ?? arrived) - arrived],
        computeMs: performance.now() - arrived,
        runs: failed ? [] : runs,
        failed,
      });
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
  return {
    infer: (entry, inputs, rows, deadline) => track(entry.id, run(entry, inputs, rows, deadline)),
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
