/**
 * A plain ONNX classifier that nothing here wrote (scikit-learn coefficients, skl2onnx's conventions, written
 * by python3-onnx: see fixtures/sklearn/make.py), dropped into a model repository with no model.json.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODELS_DIR } from './reference.js';
import { json, startTestServer } from './server.js';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'sklearn');
const NAMES = ['sk-multiclass', 'sk-binary'] as const;
const expected = (name: string) =>
  JSON.parse(readFileSync(join(FIXTURES, `${name}.expected.json`), 'utf8')) as {
    inputs: number[][];
    label: number[];
    probabilities: number[][];
  };

let dir: string;
let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'models-'));
  cpSync(join(MODELS_DIR, 'churn'), join(dir, 'churn'), { recursive: true });
  for (const n of NAMES) cpSync(join(FIXTURES, n), join(dir, n), { recursive: true });
  server = await startTestServer({ MODELS_DIR: dir });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

async function ortDirect(name: string, x: number[][]) {
  const session = await ort.InferenceSession.create(join(FIXTURES, name, '1', 'model.onnx'));
  const out = await session.run({
    float_input: new ort.Tensor('float32', Float32Array.from(x.flat()), [x.length, x[0]!.length]),
  });
  await session.release();
  return {
    label: Array.from(out.label!.data as BigInt64Array, Number),
    probabilities: Array.from(out.probabilities!.data as Float32Array),
  };
}

describe.each(NAMES)('%s', (name) => {
  const want = expected(name);

  it('describes itself from the session alone', async () => {
    const body = await json(await server.get(`/models/${name}`));
    const v = body.versions[0];
    expect(v.feature_names).toBeNull();
    expect(v.description).toBeNull();
    expect(v.inputs).toEqual([
      {
        name: 'float_input',
        type: 'float32',
        shape: [name === 'sk-binary' ? 'batch' : null, want.inputs[0]!.length],
      },
    ]);
    expect(v.batchable).toBe(true);
  });

  it('serves /v2 infer with the outputs of onnxruntime-node run directly and of scikit-learn', async () => {
    const res = await server.post(`/v2/models/${name}/infer`, {
      inputs: [
        {
          name: 'float_input',
          shape: [want.inputs.length, want.inputs[0]!.length],
          datatype: 'FP32',
          data: want.inputs,
        },
      ],
    });
    expect(res.status).toBe(200);
    const body = await json(res);
    const direct = await ortDirect(name, want.inputs);
    const [label, probabilities] = body.outputs;
    expect(label.data).toEqual(direct.label);
    expect(probabilities.data).toEqual(direct.probabilities);
    expect(label.data).toEqual(want.label);
    want.probabilities.flat().forEach((p, i) => {
      expect(probabilities.data[i]).toBeCloseTo(p, 6);
    });
  });

  it('serves /predict with array features, one row or several', async () => {
    const one = await json(await server.post('/predict', { model: name, features: want.inputs[0] }));
    expect(one.prediction).toBe(want.label[0]);
    expect(Object.keys(one.probabilities)).toEqual(want.probabilities[0]!.map((_, k) => String(k)));
    want.probabilities[0]!.forEach((p, k) => {
      expect(one.probabilities[String(k)]).toBeCloseTo(p, 6);
    });
    const many = await json(await server.post('/predict/batch', { model: name, instances: want.inputs }));
    expect(many.predictions.map((p: { prediction: number }) => p.prediction)).toEqual(want.label);
  });

  it('asks for an array when given named features', async () => {
    const res = await server.post('/predict', { model: name, features: { a: 1 } });
    expect(res.status).toBe(422);
    expect((await json(res)).error).toMatchObject({ code: 'ERR_INPUT_TYPE', field: 'features' });
  });
});

it('has no default model when MODELS_DIR holds several and DEFAULT_MODEL is unset: the row chooses', async () => {
  // A row the one five-feature model fits goes to it; a row no model fits must name one.
  const fits = await server.post('/predict', { features: [1, 2, 3, 4, 5] });
  expect(fits.status).toBe(200);
  const chosen = (await json(fits)).model;
  const five = (await json(await server.get(`/models/${chosen}`))).versions[0].feature_count;
  expect(five).toBe(5);
  const res = await server.post('/predict', { features: [1, 2, 3] });
  expect(res.status).toBe(422);
  expect((await json(res)).error.field).toBe('model');
});
