import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { MODELS_DIR } from './reference.js';

export type NodeOutputs = Record<string, { inputs: number[][]; label: number[]; probabilities: number[] }>;

export async function computeNodeOutputs(
  rows: (count: number, n: number, seed: number) => number[][],
): Promise<NodeOutputs> {
  const out: NodeOutputs = {};
  for (const name of readdirSync(MODELS_DIR).sort()) {
    for (const version of readdirSync(join(MODELS_DIR, name)).sort()) {
      const session = await ort.InferenceSession.create(join(MODELS_DIR, name, version, 'model.onnx'));
      const meta = session.inputMetadata[0] as unknown as { shape: readonly number[] };
      const features = Number(meta.shape[1]);
      const x = rows(16, features, features * 7 + version.length);
      const res = await session.run({
        float_input: new ort.Tensor('float32', Float32Array.from(x.flat()), [x.length, features]),
      });
      out[`${name}@${version}`] = {
        inputs: x,
        label: Array.from(res.label!.data as BigInt64Array, Number),
        probabilities: Array.from(res.probabilities!.data as Float32Array),
      };
      await session.release();
    }
  }
  return out;
}
