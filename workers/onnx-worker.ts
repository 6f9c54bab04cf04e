/**
 * Piscina worker: one onnxruntime-node session per model, created (and warmed) before the worker reports
 * ready, so the pool never hands a task to a worker that is still loading.
 */
import { parentPort, threadId } from 'node:worker_threads';
import { workerData } from 'piscina';
import type { Tensor } from '../src/core/tensor.js';
import { createOrtBackend } from '../src/node/ort-backend.js';
import {
  type DescribeResult,
  type RunReply,
  type RunStartedMessage,
  transferListOf,
  type WorkerFailedMessage,
  type WorkerInit,
  type WorkerReadyMessage,
  type WorkerTask,
  withTransfer,
} from './protocol.js';

const init = workerData as WorkerInit;
const backend = createOrtBackend({ intraOpNumThreads: init.intraOpNumThreads, warmup: init.warmup });
/**
 * A model that does not load (a corrupt or half-copied model.onnx) is reported, and the worker stays, idle:
 * thrown here, it would end this thread, Piscina would start another that fails alike, and the pool, torn
 * down at the first failure, would terminate workers still inside onnxruntime's session creation, which
 * aborts the whole process ("terminate called after throwing an instance of 'Napi::Error'", seen in
 * test/reload.test.ts). The pool waits for every worker's report before it ends them.
 */
let signatures: DescribeResult | undefined;
let loadError: string | undefined;
try {
  // One model at a time: when the pool closes meanwhile (SIGTERM during start-up), the rest are skipped and
  // the pool can end this thread as soon as the session being created is done (ending it inside session
  // creation would abort the process, as above).
  const loaded: DescribeResult = {};
  for (const model of init.models) {
    if (init.cancel && Atomics.load(new Int32Array(init.cancel), 0) === 1)
      throw new Error('the pool closed while this worker loaded its models');
    for (const [id, signature] of await backend.load([model])) loaded[id] = signature;
  }
  signatures = loaded;
  parentPort?.postMessage({ type: 'onnx-worker-ready', threadId } satisfies WorkerReadyMessage);
} catch (err) {
  loadError = err instanceof Error ? err.message : String(err);
  await backend.close().catch(() => {});
  parentPort?.postMessage({
    type: 'onnx-worker-failed',
    threadId,
    error: loadError,
  } satisfies WorkerFailedMessage);
}

/** Hold this worker until every worker has its release task (or a few seconds pass), then release. */
async function release(arrived: SharedArrayBuffer, workers: number): Promise<void> {
  const count = new Int32Array(arrived);
  Atomics.add(count, 0, 1);
  Atomics.notify(count, 0);
  const until = Date.now() + RELEASE_WAIT_MS;
  for (
    let seen = Atomics.load(count, 0);
    seen < workers && Date.now() < until;
    seen = Atomics.load(count, 0)
  ) {
    Atomics.wait(count, 0, seen, until - Date.now());
  }
  await backend.close();
}

const RELEASE_WAIT_MS = 5000;

export default async function handle(task: WorkerTask): Promise<DescribeResult | RunReply | undefined> {
  if (loadError !== undefined) throw new Error(`this worker's models did not load: ${loadError}`);
  if (task.op === 'describe') return signatures;
  if (task.op === 'release') {
    await release(task.arrived, task.workers);
    return undefined;
  }
  if (task.runId !== undefined)
    parentPort?.postMessage({ type: 'onnx-run-started', runId: task.runId } satisfies RunStartedMessage);
  const started = performance.now();
  let phases = { inputMs: 0, inferMs: 0, outputMs: 0 };
  let histogram: Float64Array | undefined;
  const outputs = await backend.run(task.modelId, task.inputs, {
    onTiming: ({ inputMs, inferMs, outputMs }) => {
      phases = { inputMs, inferMs, outputMs };
    },
    histogram: task.histogram,
    onHistogram: (counts) => {
      histogram = counts;
    },
  });
  const inputs: Record<string, Tensor['data']> = {};
  for (const [name, t] of Object.entries(task.inputs)) inputs[name] = t.data;
  const reply: RunReply = {
    outputs,
    inputs,
    threadId,
    startedAt: performance.timeOrigin + started,
    busyMs: performance.now() - started,
    ...phases,
    histogram,
  };
  const transfer = new Set([...transferListOf(outputs), ...transferListOf(task.inputs)]);
  if (histogram) transfer.add(histogram.buffer as ArrayBuffer);
  return withTransfer(reply, [...transfer]);
}
