/**
 * The contract every InferenceBackend meets, run against each implementation (in-process onnxruntime-node,
 * the Piscina pool, onnxruntime-web in workerd). Outputs are checked against the models' own weights.
 */
import { describe, expect, it } from 'vitest';
import type { InferenceBackend, ModelSource, RunTiming } from '../../src/core/backend.js';
import { type ReferenceModel, rows } from '../reference-core.js';

export interface BackendCase {
  name: string;
  /** A backend with `models` loaded, and how to dispose of it. */
  create(
    models: ModelSource[],
  ): Promise<{ backend: InferenceBackend; signatures: Awaited<ReturnType<InferenceBackend['load']>> }>;
  models: ModelSource[];
  /** The reference for a shipped model, computed from its weights. */
  reference: (name: string, version: string) => ReferenceModel;
}

const SHIPPED = [
  ['churn', '1', 7, 2],
  ['churn', '2', 7, 2],
  ['classifier-10', '1', 10, 2],
  ['fraud', '1', 20, 2],
  ['iris', '1', 4, 3],
  ['mlp-large', '1', 64, 2],
] as const;

export function runBackendContract(c: BackendCase) {
  describe(`backend contract: ${c.name}`, () => {
    let ctx: Awaited<ReturnType<BackendCase['create']>>;

    it('loads every shipped model and reports its signature from the session', async () => {
      ctx = await c.create(c.models);
      for (const [name, version, features, classes] of SHIPPED) {
        const sig = ctx.signatures.get(`${name}@${version}`);
        expect(sig, `${name}@${version}`).toBeDefined();
        expect(sig!.inputs).toEqual([{ name: 'float_input', type: 'float32', shape: ['N', features] }]);
        expect(sig!.outputs).toEqual([
          { name: 'label', type: 'int64', shape: ['N'] },
          { name: 'probabilities', type: 'float32', shape: ['N', classes] },
        ]);
      }
    });

    for (const [name, version, features, classes] of SHIPPED) {
      it(`runs ${name}@${version} on a batch and matches the weights`, async () => {
        const ref = c.reference(name, version);
        const batch = rows(37, features, features * 31 + Number(version));
        const out = await ctx.backend.run(`${name}@${version}`, {
          float_input: {
            type: 'float32',
            dims: [batch.length, features],
            data: Float32Array.from(batch.flat()),
          },
        });
        expect(out.probabilities!.dims).toEqual([batch.length, classes]);
        expect(out.label!.type).toBe('int64');
        const probs = out.probabilities!.data as Float32Array;
        const labels = out.label!.data as BigInt64Array;
        batch.forEach((row, r) => {
          const want = ref.proba(row);
          want.forEach((p, k) => {
            expect(probs[r * classes + k]).toBeCloseTo(p, 5);
          });
          const got = Array.from(probs.subarray(r * classes, (r + 1) * classes));
          expect(Number(labels[r])).toBe(got.indexOf(Math.max(...got)));
        });
      });
    }

    it("reports each run's timing on the caller's clock, its phases within the call", async () => {
      const timings: RunTiming[] = [];
      const called = performance.now();
      await ctx.backend.run(
        'mlp-large@1',
        {
          float_input: { type: 'float32', dims: [256, 64], data: Float32Array.from(rows(256, 64, 7).flat()) },
        },
        { onTiming: (t) => timings.push(t) },
      );
      const returned = performance.now();
      expect(timings).toHaveLength(1);
      const t = timings[0]!;
      expect(t.startedAt).toBeGreaterThanOrEqual(called);
      expect(t.inferMs).toBeGreaterThan(0);
      for (const ms of [t.inputMs, t.inferMs, t.outputMs]) expect(ms).toBeGreaterThanOrEqual(0);
      expect(t.startedAt + t.inputMs + t.inferMs + t.outputMs).toBeLessThanOrEqual(returned + 1);
    });

    it('rejects a model it has not loaded', async () => {
      await expect(
        ctx.backend.run('nope@1', {
          float_input: { type: 'float32', dims: [1, 7], data: new Float32Array(7) },
        }),
      ).rejects.toThrow();
    });

    it('rejects an input of the wrong shape without breaking later runs', async () => {
      await expect(
        ctx.backend.run('churn@1', {
          float_input: { type: 'float32', dims: [1, 3], data: new Float32Array(3) },
        }),
      ).rejects.toThrow();
      const ok = await ctx.backend.run('churn@1', {
        float_input: { type: 'float32', dims: [1, 7], data: new Float32Array(7) },
      });
      expect(ok.probabilities!.dims).toEqual([1, 2]);
    });

    it('closes', async () => {
      await ctx.backend.close();
    });
  });
}
