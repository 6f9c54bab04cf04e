import * as ort from 'onnxruntime-node';
import type { InferenceBackend } from '../core/backend.js';
import { createOrtSessionBackend, type OrtSessionLike } from '../core/ort-session-backend.js';

export interface OrtBackendOptions {
  /** Threads one session may use for one run. 1 = no oversubscription when several workers share the cores. */
  intraOpNumThreads?: number;
  /** Run every model once on zeros after loading, so the first request pays no first-run cost. */
  warmup?: boolean;
}

/** onnxruntime-node in the calling thread. The pool's workers each hold one; tests use it as the reference. */
export function createOrtBackend(options: OrtBackendOptions = {}): InferenceBackend {
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: options.intraOpNumThreads ?? 1,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
  return createOrtSessionBackend({
    name: 'onnxruntime-node',
    warmup: options.warmup !== false,
    toTensor: (t) => new ort.Tensor(t.type, t.data as Float32Array, t.dims),
    async createSession(m) {
      const source = m.path ?? m.bytes;
      if (source === undefined) throw new Error(`model ${m.id}: neither path nor bytes given`);
      const session =
        typeof source === 'string'
          ? await ort.InferenceSession.create(source, sessionOptions)
          : await ort.InferenceSession.create(source, sessionOptions);
      return session as unknown as OrtSessionLike;
    },
  });
}
