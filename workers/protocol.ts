/**
 * The one place that says what crosses between the main thread and the inference workers. Tensors travel
 * as typed arrays whose buffers are transferred, never copied.
 */
import { move, transferableSymbol, valueSymbol } from 'piscina';
import type { ModelSignature, ModelSource } from '../src/core/backend.js';
import type { HistogramSpec } from '../src/core/drift.js';
import type { Tensor } from '../src/core/tensor.js';

/** Given to every worker at start (Piscina `workerData`). */
export interface WorkerInit {
  models: ModelSource[];
  intraOpNumThreads: number;
  warmup: boolean;
  /**
   * An Int32Array's memory whose first element the pool sets to 1 when it closes while its workers load: a
   * worker then loads no further model, and reports failed.
   */
  cancel?: SharedArrayBuffer;
}

export type WorkerTask =
  | { op: 'describe' }
  /**
   * Release every session (the pool is being replaced). One such task per worker, at once: each waits on
   * `arrived` (an Int32Array counter over shared memory) until all `workers` have one, so none takes two.
   */
  | { op: 'release'; arrived: SharedArrayBuffer; workers: number }
  | {
      op: 'run';
      modelId: string;
      inputs: Record<string, Tensor> /** Echoed in RunStartedMessage. */;
      runId?: number;
      /** Count the batch's rows into these bins (drift detection): the counts come back in the reply. */
      histogram?: HistogramSpec;
    };

/** Posted by a worker once its sessions are created and warmed: the pool counts these to know it is ready. */
export interface WorkerReadyMessage {
  type: 'onnx-worker-ready';
  threadId: number;
}

export const isWorkerReady = (m: unknown): m is WorkerReadyMessage =>
  typeof m === 'object' && m !== null && (m as WorkerReadyMessage).type === 'onnx-worker-ready';

/** Posted by a worker whose models did not load; it stays, idle, until the pool ends it. */
export interface WorkerFailedMessage {
  type: 'onnx-worker-failed';
  threadId: number;
  error: string;
}

export const isWorkerFailed = (m: unknown): m is WorkerFailedMessage =>
  typeof m === 'object' && m !== null && (m as WorkerFailedMessage).type === 'onnx-worker-failed';

/**
 * Posted by a worker as it starts a run: the run limit counts from here, not from dispatch, so time spent
 * waiting for a worker (a replacement loading its sessions, say) never ends a run.
 */
export interface RunStartedMessage {
  type: 'onnx-run-started';
  runId: number;
}

export const isRunStarted = (m: unknown): m is RunStartedMessage =>
  typeof m === 'object' && m !== null && (m as RunStartedMessage).type === 'onnx-run-started';

export type DescribeResult = Record<string, ModelSignature>;
export type RunResult = Record<string, Tensor>;

/** A run's outputs, with how long the worker spent on it (timed inside the worker: no queue, no transfer). */
export interface RunReply {
  outputs: RunResult;
  /** The run's input arrays, handed back (transferred, not copied) so the caller's tensors are whole again. */
  inputs?: Record<string, Tensor['data']>;
  threadId: number;
  /** When the run started, in ms since the epoch (performance.timeOrigin + performance.now()). */
  startedAt: number;
  busyMs: number;
  /** The run's phases (see RunTiming): converting inputs, the model run, converting outputs. */
  inputMs: number;
  inferMs: number;
  outputMs: number;
  /** The drift counts the task asked for (transferred). */
  histogram?: Float64Array;
}

/** The buffers to transfer with a set of tensors. A buffer shared by several tensors goes once. */
export function transferListOf(tensors: Record<string, Tensor>): ArrayBuffer[] {
  const seen = new Set<ArrayBuffer>();
  for (const t of Object.values(tensors)) {
    const buf = t.data.buffer;
    if (buf instanceof ArrayBuffer && buf.byteLength > 0) seen.add(buf);
  }
  return [...seen];
}

/**
 * A Piscina worker's reply with these buffers moved to the main thread rather than copied (Piscina's
 * transferable wrapper; the main thread receives `value` itself).
 */
export function withTransfer<T extends object>(value: T, transfer: ArrayBuffer[]): T {
  return move({
    [transferableSymbol]: transfer,
    [valueSymbol]: value,
  } as unknown as ArrayBuffer) as unknown as T;
}
