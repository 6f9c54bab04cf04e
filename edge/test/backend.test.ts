import { describe, expect, it } from 'vitest';
import { runBackendContract } from '../../test/cases/backend.case.js';
import { referenceFromBytes } from '../../test/reference-core.js';
import { BUNDLED } from '../src/models.js';
import { createOrtWebBackend } from '../src/ort-web-backend.js';
import nodeOutputs from './node-outputs.json';

const models = BUNDLED.map((m) => ({ id: `${m.name}@${m.version}`, bytes: new Uint8Array(m.bytes) }));

runBackendContract({
  name: 'onnxruntime-web in workerd',
  models,
  reference: (name, version) => {
    const m = BUNDLED.find((b) => b.name === name && b.version === version)!;
    return referenceFromBytes(new Uint8Array(m.bytes), m.metadata);
  },
  async create(ms) {
    const backend = createOrtWebBackend();
    return { backend, signatures: await backend.load(ms) };
  },
});

describe('onnxruntime-web in workerd against onnxruntime-node', () => {
  it('gives every shipped model the outputs Node gives, within 1e-6', async () => {
    const backend = createOrtWebBackend();
    await backend.load(models);
    const fixture = nodeOutputs as Record<
      string,
      { inputs: number[][]; label: number[]; probabilities: number[] }
    >;
    expect(Object.keys(fixture).sort()).toEqual(models.map((m) => m.id).sort());
    for (const [id, want] of Object.entries(fixture)) {
      const x = want.inputs;
      const out = await backend.run(id, {
        float_input: { type: 'float32', dims: [x.length, x[0]!.length], data: Float32Array.from(x.flat()) },
      });
      const probs = Array.from(out.probabilities!.data as Float32Array);
      expect(probs).toHaveLength(want.probabilities.length);
      const worst = Math.max(...probs.map((p, i) => Math.abs(p - want.probabilities[i]!)));
      expect(worst, id).toBeLessThanOrEqual(1e-6);
      expect(Array.from(out.label!.data as BigInt64Array, Number), id).toEqual(want.label);
    }
    await backend.close();
  });
});
