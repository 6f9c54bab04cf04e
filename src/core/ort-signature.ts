/**
 * onnxruntime's session metadata (the same shape in onnxruntime-node and onnxruntime-web) as a signature.
 * Typed structurally so the core imports neither runtime.
 */
import type { Dim, ModelSignature, TensorInfo } from './backend.js';
import { allocate, type DType, isDType, type Tensor } from './tensor.js';

export interface OrtValueMetadata {
  name: string;
  isTensor: boolean;
  type?: string;
  shape?: ReadonlyArray<number | string>;
}

export function toTensorInfo(meta: OrtValueMetadata): TensorInfo {
  if (!meta.isTensor) return { name: meta.name, type: undefined, shape: [] };
  const shape: Dim[] = (meta.shape ?? []).map((d) =>
    typeof d === 'number' && d >= 0 ? d : typeof d === 'string' && d ? d : null,
  );
  return { name: meta.name, type: meta.type && isDType(meta.type) ? meta.type : undefined, shape };
}

export function signatureOf(session: {
  inputMetadata: readonly OrtValueMetadata[];
  outputMetadata: readonly OrtValueMetadata[];
}): ModelSignature {
  return {
    inputs: session.inputMetadata.map(toTensorInfo),
    outputs: session.outputMetadata.map(toTensorInfo),
  };
}

/** Zero tensors of batch 1 for every input, when all other dimensions are known: a first run to warm up. */
export function warmupTensors(sig: ModelSignature): Record<string, Tensor> | undefined {
  const out: Record<string, Tensor> = {};
  for (const input of sig.inputs) {
    if (!input.type) return undefined;
    const dims = input.shape.map((d, i) => (typeof d === 'number' ? d : i === 0 ? 1 : Number.NaN));
    if (dims.some(Number.isNaN)) return undefined;
    out[input.name] = {
      type: input.type,
      dims,
      data: allocate(
        input.type,
        dims.reduce((a, b) => a * b, 1),
      ),
    };
  }
  return out;
}

/** A session's results (onnxruntime-node or -web tensors) as server tensors, sharing their buffers. */
export function fromOrtResults(results: Record<string, unknown>): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [name, value] of Object.entries(results)) {
    const t = value as { type: string; dims: readonly number[]; data: unknown };
    out[name] = { type: t.type as DType, dims: [...t.dims], data: t.data as Tensor['data'] };
  }
  return out;
}
