import * as ort from 'onnxruntime-node';
import type { InferenceBackend, ModelSignature, ModelSource } from '../core/backend.js';
import { fromOrtResults, signatureOf, warmupTensors } from '../core/ort-signature.js';
import type { Tensor } from '../core/tensor.js';

export interface OrtBackendOptions {
  /** Threads one session may use for one run. 1 = no oversubscription when several workers share the cores. */
  intraOpNumThreads?: number;
  /** Run every model once on zeros after loading, so the first request pays no first-run cost. */
  warmup?: boolean;
}

function toFeeds(inputs: Record<string, Tensor>): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(inputs))
    feeds[name] = new ort.Tensor(t.type, t.data as Float32Array, t.dims);
  return feeds;
}

/** onnxruntime-node in the calling thread. The pool's workers each hold one; tests use it as the reference. */
export function createOrtBackend(options: OrtBackendOptions = {}): InferenceBackend {
  const sessions = new Map<string, ort.InferenceSession>();
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: options.intraOpNumThreads ?? 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
  return {
    name: 'onnxruntime-node',
    async load(models: readonly ModelSource[]) {
      const signatures = new Map<string, ModelSignature>();
      for (const m of models) {
        const source = m.path ?? m.bytes;
        if (source === undefined) throw new Error(`model ${m.id}: neither path nor bytes given`);
        const session =
          typeof source === 'string'
            ? await ort.InferenceSession.create(source, sessionOptions)
            : await ort.InferenceSession.create(source, sessionOptions);
        const sig = signatureOf(session);
        const warm = options.warmup !== false ? warmupTensors(sig) : undefined;
        if (warm) await session.run(toFeeds(warm));
        await sessions.get(m.id)?.release();
        sessions.set(m.id, session);
        signatures.set(m.id, sig);
      }
      return signatures;
    },
    async run(modelId: string, inputs: Record<string, Tensor>) {
      const session = sessions.get(modelId);
      if (!session) throw new Error(`model ${modelId} is not loaded in this backend`);
      return fromOrtResults(await session.run(toFeeds(inputs)));
    },
    async close() {
      for (const s of sessions.values()) await s.release();
      sessions.clear();
    },
  };
}
