import type { HistogramSpec } from './drift.js';
import type { DType, Tensor } from './tensor.js';

/** A dimension: a fixed size, or a symbolic / unknown one (any size). */
export type Dim = number | string | null;

export interface TensorInfo {
  name: string;
  /** Element type; `undefined` for a value that is not a tensor (sequence, map), which cannot be served. */
  type: DType | undefined;
  shape: Dim[];
}

export interface ModelSignature {
  inputs: TensorInfo[];
  outputs: TensorInfo[];
  /** Seconds the backend took to create (and warm) this model's session, where it measured them. */
  loadSeconds?: number;
}

/** A model file handed to a backend. `id` is unique per name and version. */
export interface ModelSource {
  id: string;
  /** Where the backend can read the file (Node backends). */
  path?: string;
  /** The file itself (backends with no file system). */
  bytes?: Uint8Array;
}

/** How one model run went, as the thread that ran it timed it. */
export interface RunTiming {
  /** performance.now() of the caller's thread when the run began (after any wait for a free thread). */
  startedAt: number;
  /** Turning the input tensors into the runtime's own. */
  inputMs: number;
  /** The model run itself. */
  inferMs: number;
  /** From the run's end until the outputs are the caller's (conversion, and the trip back from a worker). */
  outputMs: number;
  /**
   * When the executing thread began the run, in ms since the epoch, and how long it says the run took: the
   * run's true time, with no queue or transfer in it (what a trace shows as the worker's span).
   */
  threadStartedAt?: number;
  busyMs?: number;
  /** The worker thread that ran it, where there are several. */
  threadId?: number;
}

export interface RunOptions {
  /** Called once the run has succeeded, with its timing. */
  onTiming?: (timing: RunTiming) => void;
  /**
   * A part of one large request: it may wait behind smaller runs, so a request of 10,000 rows does not hold
   * every worker while requests of one row queue behind it. Backends without a queue ignore it.
   */
  bulk?: boolean;
  /**
   * Count the run's rows into these bins (drift detection), on the thread that runs the model: the counts
   * come back through `onHistogram` once the run has succeeded (see drift.ts, `histogramBatch`).
   */
  histogram?: HistogramSpec;
  onHistogram?: (counts: Float64Array) => void;
}

export interface BackendStats {
  /** Busy fraction of the execution threads over the last few seconds, 0..1. */
  utilization: number;
  /** Seconds each execution thread has spent running models, by thread id (counters). */
  busySeconds?: Record<string, number>;
  /** Batches waiting for a thread. */
  queuedBatches: number;
  liveWorkers: number;
}

/** What a caller of `replace` does at its two moments, so that requests never see a model half-replaced. */
export interface ReplaceHooks {
  /**
   * The new sessions are created and warmed, and runs have not moved to them yet: the caller points its
   * requests at the new set now. Throwing here abandons the new sessions; the current ones keep serving.
   */
  ready?(signatures: Map<string, ModelSignature>): void;
  /**
   * Runs now go to the new sessions; a model only the old ones hold is still served by them until this
   * resolves (the caller waits here for requests it had already sent to such a model).
   */
  moved?(): Promise<void>;
}

/**
 * The one interface every inference runtime implements: onnxruntime-node in-process, the Piscina pool that
 * forwards to it, and onnxruntime-web on the edge. The HTTP layer sees only this.
 */
export interface InferenceBackend {
  readonly name: string;
  /** Create sessions for every model (warmed where shapes allow) and report what each takes and gives. */
  load(models: readonly ModelSource[]): Promise<Map<string, ModelSignature>>;
  /** Run one batch. Input tensors may be transferred (and so detached): do not use them afterwards. */
  run(modelId: string, inputs: Record<string, Tensor>, opts?: RunOptions): Promise<Record<string, Tensor>>;
  /**
   * Make exactly `models` the loaded set: sessions for every one are created (and warmed) before this
   * resolves, runs already started finish on the sessions they began on, and sessions of models left out
   * are released. Backends that load once lack it.
   */
  replace?(models: readonly ModelSource[], hooks?: ReplaceHooks): Promise<Map<string, ModelSignature>>;
  stats?(): BackendStats;
  close(): Promise<void>;
}
