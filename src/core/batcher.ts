import { invalid, queueFull } from './errors.js';
import { concatRows, type Tensor } from './tensor.js';

export interface BatcherOptions {
  /** Most rows in one batch; a single request with more rows runs as a batch of its own. */
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
  computeMs: number;
  failed: boolean;
}

type Outputs = Record<string, Tensor>;
type Runner = (inputs: Record<string, Tensor>) => Promise<Outputs>;

interface Item {
  inputs: Record<string, Tensor>;
  rows: number;
  enqueuedAt: number;
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
  #pending: Item[] = [];
  #pendingRows = 0;
  /** Closed batches waiting for a free slot. */
  #ready: Item[][] = [];
  #readyRows = 0;
  #inFlight = 0;
  #timerArmed = false;
  #due = false;
  #timerGeneration = 0;

  constructor(name: string, run: Runner, opts: BatcherOptions, onBatch?: (r: BatchReport) => void) {
    this.#name = name;
    this.#run = run;
    this.#opts = opts;
    this.#onBatch = onBatch;
  }

  get queuedRows(): number {
    return this.#pendingRows + this.#readyRows;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  submit(inputs: Record<string, Tensor>, rows: number): Promise<Outputs> {
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
      this.#pending.push({ inputs, rows, enqueuedAt: now(), resolve, reject });
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

  async #dispatch(batch: Item[]): Promise<void> {
    this.#inFlight++;
    const started = now();
    let rows = 0;
    for (const item of batch) rows += item.rows;
    let failed = false;
    try {
      const inputs: Record<string, Tensor> = {};
      for (const name of Object.keys(batch[0]!.inputs))
        inputs[name] = concatRows(batch.map((i) => i.inputs[name]!));
      const outputs = await this.#run(inputs);
      split(outputs, batch, rows);
    } catch (err) {
      failed = true;
      for (const item of batch) item.reject(err);
    } finally {
      this.#inFlight--;
      this.#onBatch?.({
        rows,
        requests: batch.length,
        queueWaitMs: batch.map((i) => started - i.enqueuedAt),
        computeMs: now() - started,
        failed,
      });
      // Rows that arrived while every slot was busy go now, without waiting out a fresh delay.
      if (this.#pending.length > 0 && this.#ready.length === 0) this.#due = true;
      this.#drain();
    }
  }
}

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
