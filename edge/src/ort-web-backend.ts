/**
 * onnxruntime-web (WASM) inside workerd. workerd forbids compiling WASM from bytes at run time, and ORT hands
 * only `env.wasm.wasmBinary` to its loader, which calls `WebAssembly.instantiate(bytes, imports)`. So the
 * module is imported precompiled (wrangler turns a `.wasm` import into a `WebAssembly.Module`), ORT is given
 * a marker buffer as its binary, and a narrow wrapper answers the loader's call for that marker with the
 * precompiled module. Every other call passes through untouched.
 */

import wasmModule from 'onnxruntime-web/ort-wasm-simd-threaded.wasm';
import * as ort from 'onnxruntime-web/wasm';
import { createOrtSessionBackend, type InferenceBackend, type OrtSessionLike } from '../../src/core/index.js';

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

export function createOrtWebBackend(): InferenceBackend {
  return createOrtSessionBackend({
    name: 'onnxruntime-web (wasm)',
    warmup: true,
    toTensor: (t) => new ort.Tensor(t.type, t.data as Float32Array, t.dims),
    async createSession(m) {
      install();
      if (!m.bytes) throw new Error(`model ${m.id}: the edge backend needs the file's bytes`);
      const session = await ort.InferenceSession.create(m.bytes, {
        executionProviders: ['wasm'],
        graphOptimizationLevel: 'all',
      });
      return session as unknown as OrtSessionLike;
    },
  });
}
