/**
 * The InferenceBackend every onnxruntime flavour shares (onnxruntime-node, onnxruntime-web): sessions by
 * model id, a warm-up run after loading, runs, release. Each flavour supplies only how it creates a session
 * and a tensor; typed structurally so the core imports neither runtime.
 */
import type { InferenceBackend, ModelSignature, ModelSource, RunOptions } from './backend.js';
import { histogramBatch } from './drift.js';
import { fromOrtResults, type OrtValueMetadata, signatureOf, warmupTensors } from './ort-signature.js';
import type { Tensor } from './tensor.js';

export interface OrtSessionLike {
  readonly inputMetadata: readonly OrtValueMetadata[];
  readonly outputMetadata: readonly OrtValueMetadata[];
  run(feeds: Record<string, never>): Promise<Record<string, unknown>>;
  release(): Promise<void>;
}

export interface OrtSessionBackendOptions {
  name: string;
  createSession(model: ModelSource): Promise<OrtSessionLike>;
  /** The runtime's own tensor for one of ours (sharing its buffer). */
  toTensor(t: Tensor): unknown;
  /** Run every model once on zeros after loading, so the first request pays no first-run cost. */
  warmup: boolean;
}

export function createOrtSessionBackend(opts: OrtSessionBackendOptions): InferenceBackend {
  const sessions = new Map<string, OrtSessionLike>();
  const feeds = (inputs: Record<string, Tensor>) => {
    const out: Record<string, unknown> = {};
    for (const [name, t] of Object.entries(inputs)) out[name] = opts.toTensor(t);
    return out as Record<string, never>;
  };
  return {
    name: opts.name,
    async load(models: readonly ModelSource[]) {
      const signatures = new Map<string, ModelSignature>();
      for (const m of models) {
        const started = performance.now();
        const session = await opts.createSession(m);
        const sig: ModelSignature = signatureOf(session);
        const warm = opts.warmup ? warmupTensors(sig) : undefined;
        if (warm) await session.run(feeds(warm));
        sig.loadSeconds = (performance.now() - started) / 1000;
        await sessions.get(m.id)?.release();
        sessions.set(m.id, session);
        signatures.set(m.id, sig);
      }
      return signatures;
    },
    async run(modelId: string, inputs: Record<string, Tensor>, runOptions?: RunOptions) {
      const session = sessions.get(modelId);
      if (!session) throw new Error(`model ${modelId} is not loaded in this backend`);
      const startedAt = performance.now();
      const fed = feeds(inputs);
      const fedAt = performance.now();
      const results = await session.run(fed);
      const ranAt = performance.now();
      const outputs = fromOrtResults(results);
      const endedAt = performance.now();
      // Drift counts are taken here, on the thread that ran the model (a worker thread on Node), and are
      // not part of the run's timing.
      if (runOptions?.histogram && runOptions.onHistogram) {
        runOptions.onHistogram(histogramBatch(runOptions.histogram, inputs, outputs));
      }
      runOptions?.onTiming?.({
        startedAt,
        inputMs: fedAt - startedAt,
        inferMs: ranAt - fedAt,
        outputMs: endedAt - ranAt,
        threadStartedAt: performance.timeOrigin + startedAt,
        busyMs: endedAt - startedAt,
      });
      return outputs;
    },
    async close() {
      for (const s of sessions.values()) await s.release();
      sessions.clear();
    },
  };
}
