/** The HTTP contract inside workerd: the Worker's own fetch handler, with its R2, Queue and Cache bindings. */
import { createExecutionContext, env, waitOnExecutionContext } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { BAD_INPUT_CASES, SEED_FEATURES } from '../../test/cases/bad-input.js';
import { referenceFromBytes, rows } from '../../test/reference-core.js';
import worker, { buildState, type Env } from '../src/index.js';
import { BUNDLED } from '../src/models.js';

const testEnv = env as unknown as Env;

async function call(path: string, body?: unknown, init: RequestInit = {}) {
  const request = new Request(`https://edge.test${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
  const ctx = createExecutionContext();
  const res = await worker.fetch(request as Request<unknown, IncomingRequestCfProperties>, testEnv, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}
// biome-ignore lint/suspicious/noExplicitAny: bodies are checked by assertions
const json = async (res: Response): Promise<any> => res.json();

const ref = (name: string, version: string) => {
  const m = BUNDLED.find((b) => b.name === name && b.version === version)!;
  return referenceFromBytes(new Uint8Array(m.bytes), m.metadata);
};

describe('/predict on the edge', () => {
  it("answers the seed client's request with the model's values", async () => {
    const res = await call('/predict', { features: SEED_FEATURES, use_cache: false });
    expect(res.status).toBe(200);
    const body = await json(res);
    const want = ref('churn', '2').proba(Object.values(SEED_FEATURES));
    expect(body).toMatchObject({ model: 'churn', model_version: '2', cached: false, label: 'stays' });
    expect(body.probability).toBeCloseTo(want[1]!, 5);
  });

  it('caches: reordered named features and the array hit the same in-isolate entry', async () => {
    const row = [33, 61.5, 2029.5, 12, 3, 1, 3.9];
    const names = ref('churn', '2').features;
    const named = Object.fromEntries(names.map((n, i) => [n, row[i]!]));
    expect((await json(await call('/predict', { features: named }))).cache_tier).toBeNull();
    const reversed = Object.fromEntries(Object.entries(named).reverse());
    expect((await json(await call('/predict', { features: reversed }))).cache_tier).toBe('l1');
    expect((await json(await call('/predict', { features: row }))).cache_tier).toBe('l1');
  });

  it('answers batches in order, in both shapes', async () => {
    const fraud = ref('fraud', '1');
    const x = rows(30, 20, 9);
    const body = await json(await call('/predict/batch', { model: 'fraud', instances: x }));
    expect(body.count).toBe(30);
    body.predictions.forEach((p: { probability: number }, i: number) => {
      expect(p.probability).toBeCloseTo(fraud.proba(x[i]!)[1]!, 5);
    });
    const ten = ref('classifier-10', '1');
    const y = rows(5, 10, 2);
    const seed = await json(
      await call('/predict/batch', {
        model: 'classifier-10',
        requests: y.map((r) => ({ features: Object.fromEntries(ten.features.map((f, k) => [f, r[k]!])) })),
      }),
    );
    expect(seed.predictions).toHaveLength(5);
  });

  it('serves Open Inference Protocol v2', async () => {
    const meta = await json(await call('/v2/models/iris'));
    expect(meta.inputs).toEqual([{ name: 'float_input', datatype: 'FP32', shape: [-1, 4] }]);
    const x = [
      [5.1, 3.5, 1.4, 0.2],
      [6.7, 3.0, 5.2, 2.3],
    ];
    const body = await json(
      await call('/v2/models/iris/infer', {
        inputs: [{ name: 'float_input', shape: [2, 4], datatype: 'FP32', data: x }],
        outputs: [{ name: 'label' }],
      }),
    );
    expect(body.outputs).toEqual([{ name: 'label', datatype: 'INT64', shape: [2], data: [0, 2] }]);
    const bad = await call('/v2/models/iris/infer', {
      inputs: [{ name: 'float_input', shape: [1, 3], datatype: 'FP32', data: [1, 2, 3] }],
    });
    expect(bad.status).toBe(422);
    expect(typeof (await json(bad)).error).toBe('string');
  });

  it('reports health', async () => {
    const body = await json(await call('/health'));
    expect(body).toMatchObject({ status: 'healthy', runtime: 'cloudflare-workers', model_version: '2' });
    expect(Object.keys(body.models)).toEqual(['churn', 'classifier-10', 'fraud', 'iris', 'mlp-large']);
  });
});

describe('bad input gets the same answers on the edge as on Node', () => {
  for (const [what, path, body, status, code, field] of BAD_INPUT_CASES) {
    it(what, async () => {
      const res = await call(path, body);
      expect(res.status).toBe(status);
      const got = await json(res);
      expect(got.error.code).toBe(code);
      expect(got.error.field).toBe(field);
    });
  }
  it('a wrong content type: 415', async () => {
    const res = await call('/predict', '{}', { headers: { 'content-type': 'text/plain' } });
    expect(res.status).toBe(415);
  });
});

describe('bindings', () => {
  it('sends one audit record per answered request to the queue, after the response', async () => {
    const state = await buildState(testEnv);
    const sent = state.audit.sent();
    const res = await state.app.fetch(
      new Request('https://edge.test/predict', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ features: [1, 2, 3, 4, 5, 6, 7], request_id: 'edge-1' }),
      }),
    );
    expect(res.status).toBe(200);
    expect(state.audit.pending()).toBe(1);
    await state.audit.flush();
    expect(state.audit.pending()).toBe(0);
    expect(state.audit.sent()).toBe(sent + 1);
  });

  it('loads larger models from R2 at start, with their model.json', async () => {
    const churn1 = BUNDLED.find((b) => b.name === 'churn' && b.version === '1')!;
    await testEnv.MODELS!.put('models/churn-r2/7/model.onnx', churn1.bytes);
    await testEnv.MODELS!.put('models/churn-r2/7/model.json', JSON.stringify(churn1.metadata));
    const state = await buildState(testEnv);
    const res = await state.app.fetch(
      new Request('https://edge.test/predict', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'churn-r2', features: SEED_FEATURES }),
      }),
    );
    const body = await json(res);
    expect(body).toMatchObject({ model: 'churn-r2', model_version: '7', label: 'stays' });
    expect(body.probability).toBeCloseTo(ref('churn', '1').proba(Object.values(SEED_FEATURES))[1]!, 5);
  });
});

describe("Triton's extensions on the edge", () => {
  it('takes gzip binary tensors with no Content-Type, answers binary outputs, and counts them in its stats', async () => {
    const x = rows(2, 7, 5);
    const header = new TextEncoder().encode(
      JSON.stringify({
        inputs: [
          { name: 'float_input', shape: [2, 7], datatype: 'FP32', parameters: { binary_data_size: 56 } },
        ],
        parameters: { binary_data_output: true, use_cache: false },
      }),
    );
    const body = new Uint8Array(header.byteLength + 56);
    body.set(header);
    body.set(new Uint8Array(Float32Array.from(x.flat()).buffer), header.byteLength);
    const gzipped = new Uint8Array(
      await new Response(new Blob([body]).stream().pipeThrough(new CompressionStream('gzip'))).arrayBuffer(),
    );
    const before = await json(await call('/v2/models/churn/versions/2/stats'));
    const res = await call('/v2/models/churn/versions/2/infer', undefined, {
      method: 'POST',
      headers: { 'content-encoding': 'gzip', 'inference-header-content-length': String(header.byteLength) },
      body: gzipped,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const all = new Uint8Array(await res.arrayBuffer());
    const n = Number(res.headers.get('inference-header-content-length'));
    const answer = JSON.parse(new TextDecoder().decode(all.subarray(0, n)));
    expect(
      answer.outputs.map((o: { parameters: { binary_data_size: number } }) => o.parameters.binary_data_size),
    ).toEqual([16, 16]);
    const probs = new Float32Array(all.slice(n + 16).buffer);
    const churn = ref('churn', '2');
    x.forEach((row, r) => {
      expect(probs[r * 2 + 1]).toBeCloseTo(churn.proba(row)[1]!, 5);
    });
    const after = await json(await call('/v2/models/churn/versions/2/stats'));
    const [b, a] = [before.model_stats[0], after.model_stats[0]];
    expect(a.inference_stats.success.count - b.inference_stats.success.count).toBe(1);
    expect(a.inference_count - b.inference_count).toBe(2);
    expect(a.execution_count - b.execution_count).toBe(1);
    const config = await json(await call('/v2/models/churn/config'));
    expect(config).toMatchObject({ max_batch_size: 0, instance_group: [{ kind: 'KIND_MODEL', count: 1 }] });
    expect(config.dynamic_batching).toBeUndefined();
  });
});
