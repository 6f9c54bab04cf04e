import { Piscina } from 'piscina';
import {
  type DescribeResult,
  isWorkerReady,
  type RunResult,
  transferListOf,
  type WorkerInit,
  type WorkerTask,
} from '../../workers/protocol.js';
import type { BackendStats, InferenceBackend, ModelSignature, ModelSource } from '../core/backend.js';
import { ServeError } from '../core/errors.js';
import type { Tensor } from '../core/tensor.js';
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
}

/**
 * Forwards batches to a Piscina pool of worker threads, each holding onnxruntime-node sessions. The main
 * thread never runs a model. A worker that dies is replaced by Piscina; only its in-flight batch fails.
 */
export function createPoolBackend(options: PoolBackendOptions): InferenceBackend & { stats(): BackendStats } {
  if (!Number.isInteger(options.size) || options.size < 1)
    throw new Error('options.size must be a positive integer');
  let pool: Piscina<WorkerTask, DescribeResult | RunResult> | undefined;

  return {
    name: 'onnxruntime-node (piscina pool)',

    async load(models: readonly ModelSource[]) {
      if (pool)
        throw new Error('the pool backend loads its models once; create a new backend to change them');
      const workerData: WorkerInit = {
        models: models.map((m) => ({ id: m.id, ...(m.path ? { path: m.path } : { bytes: m.bytes }) })),
        intraOpNumThreads: options.intraOpNumThreads ?? 1,
        warmup: options.warmup ?? true,
      };
      const p = new Piscina<WorkerTask, DescribeResult | RunResult>({
        filename: options.workerFile ?? compiledWorker('onnx-worker.js'),
        minThreads: options.size,
        maxThreads: options.size,
        idleTimeout: Number.MAX_SAFE_INTEGER,
        maxQueue: options.maxQueue ?? 1000,
        workerData,
      });
      pool = p;
      // Each worker posts a ready message once its sessions are created and warmed. (Piscina's own
      // `workerCreate` fires for the first workers before their start-up has run, so it cannot tell.)
      await new Promise<void>((resolve, reject) => {
        let ready = 0;
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
        const onMessage = (m: unknown) => {
          if (!isWorkerReady(m) || ++ready < options.size) return;
          cleanup();
          resolve();
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
        pool = undefined;
        throw err;
      });
      p.on('error', (err) =>
        console.error(JSON.stringify({ level: 'error', msg: 'worker error', error: String(err) })),
      );
      const described = (await p.run({ op: 'describe' })) as DescribeResult;
      return new Map<string, ModelSignature>(Object.entries(described));
    },

    async run(modelId: string, inputs: Record<string, Tensor>) {
      const p = pool;
      if (!p) throw new Error('the pool backend has no models loaded');
      if (p.queueSize >= p.options.maxQueue) {
        throw new ServeError(
          'ERR_QUEUE_FULL',
          `${p.queueSize} batches are waiting for a worker; retry shortly`,
          {
            retryAfterSeconds: 1,
          },
        );
      }
      return (await p.run(
        { op: 'run', modelId, inputs },
        { transferList: transferListOf(inputs) },
      )) as RunResult;
    },

    stats() {
      return {
        utilization: pool?.utilization ?? 0,
        queuedBatches: pool?.queueSize ?? 0,
        liveWorkers: pool?.threads.length ?? 0,
      };
    },

    async close() {
      const p = pool;
      pool = undefined;
      await p?.close();
    },
  };
}
