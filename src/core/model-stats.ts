/**
 * Per model version statistics in the shape of Triton's statistics extension (GET /v2/models/…/stats):
 * requests that succeeded and failed with their durations, the time requests waited before their batch's
 * model run began, and the run's own three phases (preparing inputs, running the model, taking the outputs
 * back) as the execution thread timed them; executions counted by batch size.
 *
 * Counted as Triton counts: `inference_count` is rows the model computed (cache hits excluded),
 * `execution_count` model runs; queue and compute durations are per request (a request in a batch of four
 * is charged its batch's whole run, as in Triton, so each duration's count is requests), batch_stats per run.
 */
import type { BatchReport } from './batcher.js';
import type { ModelEntry } from './registry.js';

export interface Duration {
  count: number;
  ns: number;
}

interface PhaseStats {
  compute_input: Duration;
  compute_infer: Duration;
  compute_output: Duration;
}

interface VersionStats {
  /** Epoch ms of the last request answered for this version (0 = none yet). */
  lastInference: number;
  inferenceCount: number;
  executionCount: number;
  success: Duration;
  fail: Duration;
  queue: Duration;
  phases: PhaseStats;
  /** By batch size (rows per model run). */
  batches: Map<number, PhaseStats>;
}

const zero = (): Duration => ({ count: 0, ns: 0 });
const phases = (): PhaseStats => ({ compute_input: zero(), compute_infer: zero(), compute_output: zero() });
const ns = (ms: number) => Math.max(0, Math.round(ms * 1e6));
const add = (d: Duration, ms: number, count = 1) => {
  d.count += count;
  d.ns += ns(ms) * count;
};

export interface ModelStat {
  name: string;
  version: string;
  last_inference: number;
  inference_count: number;
  execution_count: number;
  inference_stats: { success: Duration; fail: Duration; queue: Duration } & PhaseStats;
  batch_stats: ({ batch_size: number } & PhaseStats)[];
}

export function createModelStats() {
  const byId = new Map<string, VersionStats>();
  const of = (entry: ModelEntry) => {
    let s = byId.get(entry.id);
    if (!s) {
      s = {
        lastInference: 0,
        inferenceCount: 0,
        executionCount: 0,
        success: zero(),
        fail: zero(),
        queue: zero(),
        phases: phases(),
        batches: new Map(),
      };
      byId.set(entry.id, s);
    }
    return s;
  };

  return {
    /** A prediction request for this version ended: answered (ok) or not, `ms` after it arrived. */
    request(entry: ModelEntry, ok: boolean, ms: number): void {
      const s = of(entry);
      add(ok ? s.success : s.fail, ms);
      s.lastInference = Date.now();
    },

    /** A batch the model ran (see BatchReport): its requests' queue time and its runs' phases. */
    batch(entry: ModelEntry, r: BatchReport): void {
      if (r.failed || r.runs.length === 0) return;
      const s = of(entry);
      s.inferenceCount += r.rows;
      s.executionCount += r.runs.length;
      for (const ms of r.queueMs) add(s.queue, ms);
      // Each request is charged its batch's runs (a request cut into bulk parts, all of its parts), once.
      let inputMs = 0;
      let inferMs = 0;
      let outputMs = 0;
      for (const run of r.runs) {
        inputMs += run.inputMs;
        inferMs += run.inferMs;
        outputMs += run.outputMs;
        let b = s.batches.get(run.rows);
        if (!b) {
          b = phases();
          s.batches.set(run.rows, b);
        }
        add(b.compute_input, run.inputMs);
        add(b.compute_infer, run.inferMs);
        add(b.compute_output, run.outputMs);
      }
      add(s.phases.compute_input, inputMs, r.requests);
      add(s.phases.compute_infer, inferMs, r.requests);
      add(s.phases.compute_output, outputMs, r.requests);
    },

    /** The statistics of these versions, in their order; versions never asked for report zeros. */
    snapshot(entries: readonly ModelEntry[]): ModelStat[] {
      return entries.map((e) => {
        const s = of(e);
        return {
          name: e.name,
          version: e.version,
          last_inference: s.lastInference,
          inference_count: s.inferenceCount,
          execution_count: s.executionCount,
          inference_stats: {
            success: { ...s.success },
            fail: { ...s.fail },
            queue: { ...s.queue },
            ...copy(s.phases),
          },
          batch_stats: [...s.batches]
            .sort(([a], [b]) => a - b)
            .map(([size, p]) => ({ batch_size: size, ...copy(p) })),
        };
      });
    },
  };
}

const copy = (p: PhaseStats): PhaseStats => ({
  compute_input: { ...p.compute_input },
  compute_infer: { ...p.compute_infer },
  compute_output: { ...p.compute_output },
});

export type ModelStats = ReturnType<typeof createModelStats>;
