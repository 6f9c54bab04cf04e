import type { RunOptions } from './backend.js';
import type { HistogramSpec } from './drift.js';
import { invalid, queueFull, ServeError } from './errors.js';
import { concatRows, sliceRows, type Tensor } from './tensor.js';
import type { ItemTiming } from './tracing.js';

export interface BatcherOptions {
  /**
   * Most rows in one batch. A single request with more rows runs on its own, cut into runs of this many
   * rows marked `bulk`, so the pool can let other models' small batches run between them.
   */
  maxBatchRows: number;
  /** How long the first waiting row may wait for others (ms). 0 = until the current I/O turn ends. */
  maxQueueDelayMs: number;
  /** Most rows waiting (not yet running); past it, requests are refused with ERR_QUEUE_FULL. */
  maxQueuedRows: number;
  /** Most batches running at once; while all run, new rows join the next batch. */
  maxInFlight: number;
}

export interface BatchReport {
  rows: number;
  requests: number;
  /** Per request: ms from arrival to the batch's dispatch. */
  queueWaitMs: number[];
  /**
   * Per request: ms from arrival until the model began running its batch (the dispatch, the wait for a free
   * execution thread and the trip there included): Triton's queue time. Empty when the batch failed.
   */
  queueMs: number[];
  computeMs: number;
  /** Each model run of the batch (one, or a large request's bulk parts), as the backend timed it. */
  runs: RunReport[];
  /** Each run's drift histogram, and the spec they were counted by, when the batch was asked for them. */
  histogram?: { spec: HistogramSpec; counts: Float64Array[] };
  failed: boolean;
}

export interface RunReport {
  rows: number;
  inputMs: number;
  inferMs: number;
  outputMs: number;
  /** As the executing thread timed the run (see RunTiming), where the backend says. */
  threadStartedAt?: number;
  busyMs?: number;
  threadId?: number;
}

/**
 * Run options that collect each run's timing into `runs` (the earliest start is kept in `startedAt`) and,
 * when `histogram` gives a spec for the batch, each run's drift histogram into `histogram.counts`.
 */
export function timedRuns(histogram?: () => HistogramSpec | undefined): {
  runs: RunReport[];
  histogram: { spec: HistogramSpec; counts: Float64Array[] } | undefined;
  startedAt: () => number | undefined;
  timed: (rows: number) => RunOptions;
} {
  const runs: RunReport[] = [];
  let first: number | undefined;
  const spec = histogram?.();
  const counted = spec ? { spec, counts: [] as Float64Array[] } : undefined;
  const onHistogram = (counts: Float64Array) => {
    counted?.counts.push(counts);
  };
  return {
    runs,
    histogram: counted,
    startedAt: () => first,
    timed: (rows) => {
      const opts: RunOptions = {
        onTiming: (t) => {
          runs.push({
            rows,
            inputMs: t.inputMs,
            inferMs: t.inferMs,
            outputMs: t.outputMs,
            threadStartedAt: t.threadStartedAt,
            busyMs: t.busyMs,
            threadId: t.threadId,
          });
          if (first === undefined || t.startedAt < first) first = t.startedAt;
        },
      };
      if (counted) {
        opts.histogram = counted.spec;
        opts.onHistogram = onHistogram;
      }
      return opts;
    },
  };
}

type Outputs = Record<string, Tensor>;
type Runner = (inputs: Record<string, Tensor>, opts?: RunOptions) => Promise<Outputs>;

interface Item {
  inputs: Record<string, Tensor>;
  rows: number;
  enqueuedAt: number;
  /** performance.now() past which the client no longer wants the answer. */
  deadline: number;
  /** Told how this request's rows went through the batch (tracing); absent = nobody asks. */
  observe: ((t: ItemTiming) => void) | undefined;
  settled: boolean;
  resolve: (outputs: Outputs) => void;
  reject: (err: unknown) => void;
}

const now = () => performance.now();
const defer: (fn: () => void) => unknown =
  typeof globalThis.setImmediate === 'function' ? (fn) => setImmediate(fn) : (fn) => setTimeout(fn, 0);

/**
 * Triton-style dynamic batcher for one model version: rows of concurrent requests are stacked into one
 * tensor per input, run once, and split back in order. One batch's failure fails only its own requests.
 */
export class MicroBatcher {
  readonly #name: string;
  readonly #run: Runner;
  readonly #opts: BatcherOptions;
  readonly #onBatch: ((r: BatchReport) => void) | undefined;
  readonly #histogram: (() => HistogramSpec | undefined) | undefined;
  #pending: Item[] = [];
  #pendingRows = 0;
  /** Closed batches waiting for a free slot. */
  #ready: Item[][] = [];
  #readyRows = 0;
  #inFlight = 0;
  #timerArmed = false;
  #due = false;
  #timerGeneration = 0;
  /** Items of batches being run: a sweep may answer them 504 while their batch still runs. */
  #running = new Set<Item>();
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** `histogram` gives each batch's drift histogram spec (or none): see RunOptions.histogram. */
  constructor(
    name: string,
    run: Runner,
    opts: BatcherOptions,
    onBatch?: (r: BatchReport) => void,
    histogram?: () => HistogramSpec | undefined,
  ) {
    this.#name = name;
    this.#run = run;
    this.#opts = opts;
    this.#onBatch = onBatch;
    this.#histogram = histogram;
  }

  get queuedRows(): number {
    return this.#pendingRows + this.#readyRows;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  submit(
    inputs: Record<string, Tensor>,
    rows: number,
    deadline = Number.POSITIVE_INFINITY,
    observe?: (t: ItemTiming) => void,
  ): Promise<Outputs> {
    // More rows than the queue can ever hold: retrying cannot help, so not a 503.
    if (rows > this.#opts.maxQueuedRows) {
      return Promise.reject(
        invalid(
          'ERR_TOO_MANY_ROWS',
          'rows',
          `${rows} rows; this model queues at most ${this.#opts.maxQueuedRows}`,
        ),
      );
    }
    if (this.queuedRows + rows > this.#opts.maxQueuedRows)
      return Promise.reject(queueFull(this.#name, this.queuedRows));
    return new Promise<Outputs>((resolve, reject) => {
      // Rows stack only with rows of the same inner shape (models with a free inner dimension).
      const first = this.#pending[0];
      if (first && !sameInnerShape(first.inputs, inputs)) this.#close();
      if (this.#pendingRows > 0 && this.#pendingRows + rows > this.#opts.maxBatchRows) this.#close();
      const item: Item = {
        inputs,
        rows,
        enqueuedAt: now(),
        deadline,
        observe,
        settled: false,
        resolve,
        reject,
      };
      item.resolve = (o) => {
        if (item.settled) return;
        item.settled = true;
        resolve(o);
      };
      item.reject = (e) => {
        if (item.settled) return;
        item.settled = true;
        reject(e);
      };
      this.#pending.push(item);
      if (deadline !== Number.POSITIVE_INFINITY) this.#sweep();
      this.#pendingRows += rows;
      if (this.#pendingRows >= this.#opts.maxBatchRows) this.#close();
      else if (!this.#timerArmed) this.#arm();
      this.#drain();
    });
  }

  #arm(): void {
    this.#timerArmed = true;
    this.#due = false;
    const generation = ++this.#timerGeneration;
    const fire = () => {
      if (generation !== this.#timerGeneration) return;
      this.#timerArmed = false;
      this.#due = true;
      this.#drain();
    };
    if (this.#opts.maxQueueDelayMs <= 0) defer(fire);
    else setTimeout(fire, this.#opts.maxQueueDelayMs);
  }

  /** Move the pending rows into a closed batch. */
  #close(): void {
    if (this.#pending.length === 0) return;
    this.#ready.push(this.#pending);
    this.#readyRows += this.#pendingRows;
    this.#pending = [];
    this.#pendingRows = 0;
    this.#timerArmed = false;
    this.#due = false;
    this.#timerGeneration++;
  }

  #drain(): void {
    while (this.#inFlight < this.#opts.maxInFlight) {
      if (this.#ready.length === 0 && this.#due && this.#pending.length > 0) this.#close();
      const batch = this.#ready.shift();
      if (!batch) return;
      for (const item of batch) this.#readyRows -= item.rows;
      void this.#dispatch(batch);
    }
  }

  /** While anything waits or runs, answer 504 to items whose deadline has passed, every SWEEP_MS. */
  #sweep(): void {
    if (this.#sweeper) return;
    this.#sweeper = setInterval(() => {
      const t = now();
      const expire = (item: Item) => {
        if (item.settled || item.deadline > t) return false;
        item.reject(deadlineExceeded(item, t));
        return true;
      };
      let expired = 0;
      for (const item of this.#pending) if (expire(item)) expired += item.rows;
      for (const batch of this.#ready) for (const item of batch) if (expire(item)) expired += item.rows;
      for (const item of this.#running) expire(item);
      if (expired > 0) {
        // Expired rows leave the queue: they no longer count against its bound, nor will they run.
        this.#pending = this.#pending.filter((i) => !i.settled);
        this.#pendingRows = this.#pending.reduce((n, i) => n + i.rows, 0);
        this.#ready = this.#ready.map((b) => b.filter((i) => !i.settled)).filter((b) => b.length > 0);
        this.#readyRows = this.#ready.reduce((n, b) => n + b.reduce((m, i) => m + i.rows, 0), 0);
      }
      if (this.#pending.length === 0 && this.#ready.length === 0 && this.#running.size === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, SWEEP_MS);
    (this.#sweeper as { unref?: () => void }).unref?.();
  }

  /** One request larger than a batch: runs of at most maxBatchRows rows, all queued at once, joined in order. */
  async #runInParts(
    inputs: Record<string, Tensor>,
    rows: number,
    timed: (rows: number) => RunOptions,
  ): Promise<Outputs> {
    const size = this.#opts.maxBatchRows;
    const parts: Promise<Outputs>[] = [];
    for (let start = 0; start < rows; start += size) {
      const end = Math.min(rows, start + size);
      const part: Record<string, Tensor> = {};
      for (const name in inputs) part[name] = sliceRows(inputs[name]!, start, end);
      parts.push(this.#run(part, { bulk: true, ...timed(end - start) }));
    }
    const results = await Promise.all(parts);
    const joined: Outputs = {};
    for (const name of Object.keys(results[0]!)) joined[name] = concatRows(results.map((r) => r[name]!));
    return joined;
  }

  async #dispatch(all: Item[]): Promise<void> {
    // Rows whose client has given up do not run.
    const t = now();
    for (const item of all) if (!item.settled && item.deadline <= t) item.reject(deadlineExceeded(item, t));
    const batch = all.filter((i) => !i.settled);
    if (batch.length === 0) return this.#drain();
    this.#inFlight++;
    for (const item of batch) this.#running.add(item);
    const started = now();
    let rows = 0;
    for (const item of batch) rows += item.rows;
    let failed = false;
    const { runs, histogram, startedAt, timed } = timedRuns(this.#histogram);
    try {
      const inputs: Record<string, Tensor> = {};
      for (const name of Object.keys(batch[0]!.inputs))
        inputs[name] = concatRows(batch.map((i) => i.inputs[name]!));
      const outputs =
        rows > this.#opts.maxBatchRows
          ? await this.#runInParts(inputs, rows, timed)
          : await this.#run(inputs, timed(rows));
      split(outputs, batch, rows);
    } catch (err) {
      failed = true;
      for (const item of batch) item.reject(err);
    } finally {
      for (const item of batch) this.#running.delete(item);
      this.#inFlight--;
      this.#onBatch?.({
        rows,
        requests: batch.length,
        queueWaitMs: batch.map((i) => started - i.enqueuedAt),
        queueMs: failed ? [] : batch.map((i) => (startedAt() ?? started) - i.enqueuedAt),
        computeMs: now() - started,
        runs: failed ? [] : runs,
        histogram: failed ? undefined : histogram,
        failed,
      });
      for (const item of batch) {
        item.observe?.({
          enqueuedAt: item.enqueuedAt,
          dispatchedAt: started,
          batchRows: rows,
          batchRequests: batch.length,
          runs: failed ? [] : runs,
          failed,
        });
      }
      // Rows that arrived while every slot was busy go now, without waiting out a fresh delay.
      if (this.#pending.length > 0 && this.#ready.length === 0) this.#due = true;
      this.#drain();
    }
  }
}

const SWEEP_MS = 25;

const deadlineExceeded = (item: Item, t: number) =>
  new ServeError(
    'ERR_DEADLINE_EXCEEDED',
    `the request's deadline passed before its rows were answered (they waited ${Math.round(t - item.enqueuedAt)} ms here)`,
  );

/** Every input has the same dimensions after the first (the rows). */
function sameInnerShape(a: Record<string, Tensor>, b: Record<string, Tensor>): boolean {
  for (const name in a) {
    const da = a[name]!.dims;
    const db = b[name]?.dims;
    if (!db || da.length !== db.length) return false;
    for (let i = 1; i < da.length; i++) if (da[i] !== db[i]) return false;
  }
  return true;
}

function split(outputs: Outputs, batch: Item[], rows: number): void {
  const names = Object.keys(outputs);
  for (const name of names) {
    if (outputs[name]!.dims[0] !== rows) {
      throw new Error(`output '${name}' has ${outputs[name]!.dims[0]} rows for a batch of ${rows}`);
    }
  }
  if (batch.length === 1) {
    batch[0]!.resolve(outputs);
    return;
  }
  let offset = 0;
  for (const item of batch) {
    const part: Outputs = {};
    for (const name of names) {
      const t = outputs[name]!;
      const per = t.data.length / rows;
      part[name] = {
        type: t.type,
        dims: [item.rows, ...t.dims.slice(1)],
        data: t.data.subarray(offset * per, (offset + item.rows) * per),
      };
    }
    offset += item.rows;
    item.resolve(part);
  }
}
