import { Piscina, type TaskQueue } from 'piscina';
import {
  type DescribeResult,
  isRunStarted,
  isWorkerFailed,
  isWorkerReady,
  type RunReply,
  type RunResult,
  transferListOf,
  type WorkerInit,
  type WorkerTask,
} from '../../workers/protocol.js';
import type {
  BackendStats,
  InferenceBackend,
  ModelSignature,
  ModelSource,
  ReplaceHooks,
  RunOptions,
} from '../core/backend.js';
import { ServeError } from '../core/errors.js';
import type { Tensor } from '../core/tensor.js';
import { log } from './log.js';
import { compiledWorker } from './worker-file.js';

export interface PoolBackendOptions {
  /** Worker threads, each with its own sessions. */
  size: number;
  intraOpNumThreads?: number;
  warmup?: boolean;
  /** The worker script; defaults to the compiled workers/onnx-worker.js. */
  workerFile?: string;
  /** Most ms to wait for every worker to load its models. */
  startTimeoutMs?: number;
  /**
   * Most batches waiting for a free worker; past it, a run is refused with 503 ERR_QUEUE_FULL. Batched
   * models never queue more than the batcher lets in flight; this bounds models that skip the batcher.
   */
  maxQueue?: number;
  /** Most ms one batch may run; past it the worker is ended (and replaced) and the batch fails. */
  runTimeoutMs?: number;
}

/**
 * Forwards batches to a Piscina pool of worker threads, each holding onnxruntime-node sessions. The main
 * thread never runs a model. A worker that dies is replaced by Piscina; only its in-flight batch fails.
 */
export function createPoolBackend(
  options: PoolBackendOptions,
): InferenceBackend & { stats(): BackendStats; replace: NonNullable<InferenceBackend['replace']> } {
  if (!Number.isInteger(options.size) || options.size < 1)
    throw new Error('options.size must be a positive integer');
  type Pool = Piscina<WorkerTask, DescribeResult | RunReply | undefined>;
  let pool: Pool | undefined;
  /** The models the current pool's workers hold. */
  let poolModels = new Set<string>();
  const runTimeoutMs = options.runTimeoutMs ?? 60_000;
  const busy = createBusyMeter(UTILIZATION_WINDOW_MS);
  // One watchdog for every run, rather than a timer per batch (AbortSignal.timeout per batch cost
  // measurable CPU per request): runs past the limit are aborted, and Piscina ends their worker.
  const watchdog = setInterval(
    () => busy.abortOlderThan(runTimeoutMs),
    Math.min(1000, Math.max(10, runTimeoutMs / 4)),
  );
  watchdog.unref();
  let closed = false;
  /** Pools replaced and not yet closed, with the models they hold. */
  const draining = new Map<Pool, Set<string>>();
  /** Runs dispatched to each pool and not yet answered, and who waits for a pool's to reach none. */
  const active = new Map<object, { runs: number; idle: (() => void)[] }>();
  const settledRuns = (p: object) =>
    new Promise<void>((resolve) => {
      const a = active.get(p);
      if (!a || a.runs === 0) resolve();
      else a.idle.push(resolve);
    });

  /**
   * Pools still starting, each with its cancel flag: closing the backend sets the flags and waits for these
   * to settle, so no worker is ended inside onnxruntime's session creation (which aborts the whole process:
   * "terminate called after throwing an instance of 'Napi::Error'", 3 SIGTERMs in 8 during a 48-worker
   * start-up exited with SIGABRT instead of 0).
   */
  const starting = new Map<Promise<unknown>, Int32Array>();

  /** A pool whose every worker holds (warmed) sessions of `models`, and what they take and give. */
  function startPool(models: readonly ModelSource[]) {
    const cancel = new Int32Array(new SharedArrayBuffer(4));
    const started = startPoolWith(models, cancel);
    const settled = started.then(
      () => {},
      () => {},
    );
    starting.set(settled, cancel);
    void settled.then(() => starting.delete(settled));
    return started;
  }

  async function startPoolWith(models: readonly ModelSource[], cancel: Int32Array) {
    const workerData: WorkerInit = {
      models: models.map((m) => ({ id: m.id, ...(m.path ? { path: m.path } : { bytes: m.bytes }) })),
      intraOpNumThreads: options.intraOpNumThreads ?? 1,
      warmup: options.warmup ?? true,
      cancel: cancel.buffer as SharedArrayBuffer,
    };
    const p = new Piscina<WorkerTask, DescribeResult | RunReply | undefined>({
      filename: options.workerFile ?? compiledWorker('onnx-worker.js'),
      minThreads: options.size,
      maxThreads: options.size,
      idleTimeout: Number.MAX_SAFE_INTEGER,
      maxQueue: options.maxQueue ?? 1000,
      taskQueue: new LaneQueue(),
      workerData,
      // Piscina's own run and wait histograms: unused (the workers time their runs, see createBusyMeter),
      // and native memory that a closed pool kept (about 0.35 MB per pool, measured over 120 pools).
      recordTiming: false,
    });
    // Every worker's busy counter exists from its start (replacements included), so rate() has a series.
    p.on('message', (m: unknown) => {
      if (isRunStarted(m)) busy.started(m.runId);
      else if (isWorkerReady(m)) busy.register(m.threadId);
    });
    // Until the pool is ready every worker error is handled by the wait below, and the first one ends it:
    // a second worker failing in the same turn (every worker fails alike on a corrupt model file) must not
    // reach an 'error' event with no listener, which would throw in the process.
    const whileStarting = () => {};
    p.on('error', whileStarting);
    // Each worker posts a ready message once its sessions are created and warmed. (Piscina's own
    // `workerCreate` fires for the first workers before their start-up has run, so it cannot tell.)
    await new Promise<void>((resolve, reject) => {
      let ready = 0;
      let failed = 0;
      let firstFailure = '';
      const timeoutMs = options.startTimeoutMs ?? 120_000;
      const cleanup = () => {
        clearTimeout(timer);
        p.off('message', onMessage);
        p.off('error', onError);
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`workers not ready after ${timeoutMs} ms`));
      }, timeoutMs);
      // A worker whose models did not load says so and waits: the pool is ended only once every worker
      // has reported, so none is inside onnxruntime's session creation when its thread is terminated.
      const onMessage = (m: unknown) => {
        if (isWorkerReady(m)) ready++;
        else if (isWorkerFailed(m)) {
          if (failed++ === 0) firstFailure = m.error;
        } else return;
        if (ready + failed < options.size) return;
        cleanup();
        if (failed === 0) resolve();
        else reject(new Error(firstFailure));
      };
      const onError = (err: unknown) => {
        cleanup();
        reject(err);
      };
      p.on('message', onMessage);
      p.on('error', onError);
    }).catch(async (err) => {
      // Workers starting meanwhile fail the same way: their errors must not surface as uncaught.
      p.on('error', () => {});
      await p.destroy();
      throw err;
    });
    p.on('error', (err) => log('error', 'worker error', { error: String(err) }));
    p.off('error', whileStarting);
    if (closed) {
      await p.destroy();
      throw new Error('the pool backend closed while models were loading');
    }
    const described = (await p.run({ op: 'describe' })) as DescribeResult;
    return { pool: p, signatures: new Map<string, ModelSignature>(Object.entries(described)) };
  }

  return {
    name: 'onnxruntime-node (piscina pool)',

    async load(models: readonly ModelSource[]) {
      if (pool) throw new Error('the pool backend loads its models once; use replace() to change them');
      const started = await startPool(models);
      if (closed) {
        await started.pool.destroy();
        throw new Error('the pool backend closed while models were loading');
      }
      pool = started.pool;
      poolModels = new Set(models.map((m) => m.id));
      return started.signatures;
    },

    /**
     * A new pool with `models` starts (every worker's sessions created and warmed) while the current one
     * keeps serving; then runs go to the new pool (the old one still runs the models only it holds until
     * `hooks.moved` resolves), and the old one closes once its runs have finished: its threads end, and the
     * sessions they held with them.
     */
    async replace(models: readonly ModelSource[], hooks?: ReplaceHooks) {
      const started = await startPool(models);
      if (closed) {
        await started.pool.destroy();
        throw new Error('the pool backend closed while models were loading');
      }
      try {
        hooks?.ready?.(started.signatures);
      } catch (err) {
        await started.pool.destroy();
        throw err;
      }
      const old = pool;
      const oldModels = poolModels;
      pool = started.pool;
      poolModels = new Set(models.map((m) => m.id));
      if (!old) {
        await hooks?.moved?.();
        return started.signatures;
      }
      draining.set(old, oldModels);
      try {
        await hooks?.moved?.();
      } finally {
        // Runs may still be dispatched to the old pool until it leaves `draining`: wait until none is left.
        while ((active.get(old)?.runs ?? 0) > 0) await settledRuns(old);
        draining.delete(old);
      }
      // Each worker releases its sessions itself before its thread ends (rather than leaving them to the
      // thread's teardown): one release task per worker, all at once.
      const workers = old.threads.length;
      const arrived = new SharedArrayBuffer(4);
      await Promise.all(
        Array.from({ length: workers }, () => old.run({ op: 'release', arrived, workers })),
      ).catch((err) => log('error', 'session release failed', { error: String(err) }));
      await old.close();
      return started.signatures;
    },

    async run(modelId: string, inputs: Record<string, Tensor>, opts?: RunOptions): Promise<RunResult> {
      let p = pool;
      if (!p) throw new Error('the pool backend has no models loaded');
      // A model the new pool left out runs on the old one while that one drains (requests already given a
      // version that a reload removed); past that, a request accepted just before its model was unloaded
      // (its body still arriving then) is refused here, as requests after the unload are, not failed by a
      // worker that no longer holds the model.
      if (!poolModels.has(modelId)) {
        p = undefined;
        for (const [old, ids] of draining) if (ids.has(modelId)) p = old;
      }
      if (!p) {
        throw new ServeError('ERR_MODEL_UNAVAILABLE', `model ${modelId} is not loaded now`, {
          field: 'model',
        });
      }
      if (p.queueSize >= p.options.maxQueue) {
        throw new ServeError(
          'ERR_QUEUE_FULL',
          `${p.queueSize} batches are waiting for a worker; retry shortly`,
          {
            retryAfterSeconds: 1,
          },
        );
      }
      const abort = new RunAbort();
      const task = busy.dispatched(abort);
      let runs = active.get(p);
      if (!runs) {
        runs = { runs: 0, idle: [] };
        active.set(p, runs);
      }
      runs.runs++;
      try {
        // A run that never ends would hold its worker and its batcher slot for ever: past the limit
        // Piscina ends the worker (a new one replaces it) and this batch fails.
        const reply = (await p
          .run(
            // The queue reads the lane from a symbol key, which the structured clone to the worker leaves out.
            {
              op: 'run',
              modelId,
              inputs,
              runId: task,
              histogram: opts?.histogram,
              [Piscina.queueOptionsSymbol]: { bulk: opts?.bulk === true },
            },
            {
              transferList: transferListOf(inputs),
              signal: abort,
            },
          )
          .catch((err: unknown) => {
            if (abort.aborted) {
              throw new ServeError(
                'ERR_INFERENCE',
                `model ${modelId}: the batch ran past ${runTimeoutMs} ms; its worker was replaced`,
                { cause: err },
              );
            }
            throw err;
          })) as RunReply;
        busy.ran(reply.threadId, reply.startedAt, reply.busyMs);
        // The input buffers went to the worker and come back with the reply: a request's own tensor (a
        // batch of one request is that request's tensor) is whole again for its audit record.
        if (reply.inputs) {
          for (const [name, data] of Object.entries(reply.inputs)) {
            const t = inputs[name];
            if (t) t.data = data;
          }
        }
        if (reply.histogram) opts?.onHistogram?.(reply.histogram);
        if (opts?.onTiming) {
          // When the run began, on this thread's clock: the worker's "started" message arrives after it did
          // (and may arrive after the reply: they travel on different ports), and so does the reply less
          // the worker's busy time. The earlier of the two is the closer.
          const repliedAt = performance.now();
          const startedAt = Math.min(busy.startedAt(task) ?? repliedAt, repliedAt - reply.busyMs);
          opts.onTiming({
            startedAt,
            inputMs: reply.inputMs,
            inferMs: reply.inferMs,
            outputMs: Math.max(reply.outputMs, repliedAt - startedAt - reply.inputMs - reply.inferMs),
            // The run as the worker timed it, on the epoch clock both threads share (a trace's worker span).
            threadStartedAt: reply.startedAt,
            busyMs: reply.inputMs + reply.inferMs + reply.outputMs,
            threadId: reply.threadId,
          });
        }
        return reply.outputs;
      } finally {
        busy.settled(task);
        if (--runs.runs === 0) {
          for (const resolve of runs.idle) resolve();
          runs.idle = [];
          if (p !== pool) active.delete(p);
        }
      }
    },

    stats() {
      const threads = pool?.threads.length ?? 0;
      return {
        utilization: busy.utilization(Math.max(1, options.size)),
        busySeconds: busy.totals(),
        queuedBatches: pool?.queueSize ?? 0,
        liveWorkers: threads,
      };
    },

    async close() {
      closed = true;
      clearInterval(watchdog);
      // Pools still starting: workers yet to load load nothing; those loading finish, then all are ended.
      for (const cancel of starting.values()) Atomics.store(cancel, 0, 1);
      await Promise.all(starting.keys());
      const p = pool;
      pool = undefined;
      await p?.close();
    },
  };
}

/**
 * What Piscina needs of a run's abort signal (its AbortSignalEventTarget: one 'abort' listener, `aborted`,
 * `reason`) and no more. A Node AbortController per batch built an EventTarget each time, and its objects
 * reached the main thread's old generation: 10,000 runs through the pool promoted 15.5-17.5 MB with it and
 * 12.3-12.9 MB with this (--trace-gc-nvp, three runs each); promoted garbage is what grows the heap under load
 * until a full collection.
 */
class RunAbort {
  aborted = false;
  reason: unknown;
  #listener: (() => void) | undefined;

  addEventListener(_type: 'abort', listener: () => void): void {
    this.#listener = listener;
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    if (this.#listener === listener) this.#listener = undefined;
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = new Error('the run passed its time limit');
    const listener = this.#listener;
    this.#listener = undefined;
    listener?.();
  }
}

/** Small runs that may pass ahead of waiting bulk runs before one bulk run must go. */
const INTERACTIVE_PER_BULK = 4;

/**
 * Piscina's task queue with two lanes: parts of large requests (`bulk`) wait behind ordinary batches, but
 * one of them goes after every INTERACTIVE_PER_BULK ordinary ones, so neither lane starves. With one worker
 * and a 10,000-row request cut into 512-row parts, a one-row request waits for at most one part to finish
 * instead of the whole request.
 */
class LaneQueue implements TaskQueue {
  #interactive: Task[] = [];
  #bulk: Task[] = [];
  #streak = 0;

  get size(): number {
    return this.#interactive.length + this.#bulk.length;
  }

  push(task: Task): void {
    const options = (task as unknown as Record<symbol, { bulk?: boolean } | null>)[
      Piscina.queueOptionsSymbol
    ];
    (options?.bulk ? this.#bulk : this.#interactive).push(task);
  }

  shift(): Task | null {
    if (this.#interactive.length > 0 && (this.#bulk.length === 0 || this.#streak < INTERACTIVE_PER_BULK)) {
      this.#streak++;
      return this.#interactive.shift()!;
    }
    this.#streak = 0;
    return this.#bulk.shift() ?? null;
  }

  remove(task: Task): void {
    for (const lane of [this.#interactive, this.#bulk]) {
      const i = lane.indexOf(task);
      if (i >= 0) {
        lane.splice(i, 1);
        return;
      }
    }
  }
}

type Task = Parameters<TaskQueue['push']>[0];

/** Utilization is read over this window: long enough to smooth single batches, short enough to show now. */
const UTILIZATION_WINDOW_MS = 5000;

/**
 * Busy time of the pool's threads, as the workers measure it: a total per thread (a counter, whose rate()
 * is utilization, as node_exporter exposes CPU) and the busy fraction over a recent window, counting runs
 * still in progress.
 */
function createBusyMeter(windowMs: number) {
  const totals = new Map<number, number>();
  /** Runs that ended within the window: [start, end] in epoch ms. */
  let recent: [number, number][] = [];
  /**
   * Runs dispatched and not yet answered: since when each has been running (or waiting for a worker, which
   * neither the run limit nor utilization counts), and how to abort it.
   */
  const running = new Map<number, { since: number; waiting: boolean; abort: RunAbort; startedAt?: number }>();
  let next = 0;
  const epochNow = () => performance.timeOrigin + performance.now();
  return {
    dispatched(abort: RunAbort): number {
      const id = next++;
      running.set(id, { since: epochNow(), waiting: true, abort });
      return id;
    },
    /** A worker says it has begun the run: its time counts from now. */
    started(id: number) {
      const run = running.get(id);
      if (!run) return;
      run.waiting = false;
      run.since = epochNow();
      run.startedAt = performance.now();
    },
    /** performance.now() when the worker said the run began, if it has said so yet. */
    startedAt(id: number): number | undefined {
      return running.get(id)?.startedAt;
    },
    abortOlderThan(ms: number) {
      const limit = epochNow() - ms;
      for (const run of running.values()) if (!run.waiting && run.since < limit) run.abort.abort();
    },
    settled(id: number) {
      running.delete(id);
    },
    register(threadId: number) {
      if (!totals.has(threadId)) totals.set(threadId, 0);
    },
    ran(threadId: number, startedAt: number, busyMs: number) {
      totals.set(threadId, (totals.get(threadId) ?? 0) + busyMs);
      recent.push([startedAt, startedAt + busyMs]);
      // Kept bounded without a scrape: drop what has left the window now and then.
      if (recent.length > 4096) {
        const from = epochNow() - windowMs;
        recent = recent.filter(([, end]) => end > from);
      }
    },
    totals(): Record<string, number> {
      return Object.fromEntries([...totals].map(([t, ms]) => [String(t), ms / 1000]));
    },
    utilization(threads: number): number {
      const now = epochNow();
      const from = now - windowMs;
      recent = recent.filter(([, end]) => end > from);
      let ms = 0;
      for (const [start, end] of recent) ms += end - Math.max(start, from);
      // Runs in progress: at most one per thread is actually running; the rest wait in the queue.
      const inProgress = [...running.values()]
        .filter((r) => !r.waiting)
        .map((r) => r.since)
        .sort((a, b) => a - b)
        .slice(0, threads);
      for (const since of inProgress) ms += now - Math.max(since, from);
      return Math.min(1, ms / (windowMs * threads));
    },
  };
}
