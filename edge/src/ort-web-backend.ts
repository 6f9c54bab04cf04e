/**
 * onnxruntime-web (WASM) inside workerd. workerd forbids compiling WASM from bytes at run time, and ORT hands
 * only `env.wasm.wasmBinary` to its loader, which calls `WebAssembly.instantiate(bytes, imports)`. So the
 * module is imported precompiled (wrangler turns a `.wasm` import into a `WebAssembly.Module`), ORT is given
 * a marker buffer as its binary, and a narrow wrapper answers the loader's call for that marker with the
 * precompiled module. Every other call passes through untouched.
 */

import wasmModule from 'onnxruntime-web/ort-wasm-simd-threaded.wasm';
import * as ort from 'onnxruntime-web/wasm';
import type { InferenceBackend, ModelSignature, ModelSource } from '../../src/core/backend.js';
import { fromOrtResults, signatureOf, warmupTensors } from '../../src/core/ort-signature.js';
import type { Tensor } from '../../src/core/tensor.js';

const MARKER = new ArrayBuffer(8);
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  const original = WebAssembly.instantiate.bind(WebAssembly);
  const isMarker = (source: unknown) =>
    source === MARKER || (ArrayBuffer.isView(source) && (source as ArrayBufferView).buffer === MARKER);
  WebAssembly.instantiate = ((source: unknown, imports?: WebAssembly.Imports) => {
    if (isMarker(source)) {
      return original(wasmModule, imports).then((instance) => ({ module: wasmModule, instance }));
    }
    return original(source as BufferSource, imports);
  }) as typeof WebAssembly.instantiate;
  ort.env.wasm.wasmBinary = MARKER;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;
}

function toFeeds(inputs: Record<string, Tensor>): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(inputs))
    feeds[name] = new ort.Tensor(t.type, t.data as Float32Array, t.dims);
  return feeds;
}

export function createOrtWebBackend(): InferenceBackend {
  const sessions = new Map<string, ort.InferenceSession>();
  return {
    name: 'onnxruntime-web (wasm)',
    async load(models: readonly ModelSource[]) {
      install();
      const signatures = new Map<string, ModelSignature>();
      for (const m of models) {
        if (!m.bytes) throw new Error(`model ${m.id}: the edge backend needs the file's bytes`);
        const session = await ort.InferenceSession.create(m.bytes, {
          executionProviders: ['wasm'],
          graphOptimizationLevel: 'all',
        });
        const sig = signatureOf(session);
        const warm = warmupTensors(sig);
        if (warm) await session.run(toFeeds(warm));
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
