import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BAD_INPUT_CASES, SEED_FEATURES } from './cases/bad-input.js';
import { referenceModel, rows } from './reference.js';
import { json, startTestServer } from './server.js';

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(() => server.close());

const churn2 = referenceModel('churn', '2');
const churn1 = referenceModel('churn', '1');
const named = (features: string[], row: number[]) => Object.fromEntries(features.map((f, i) => [f, row[i]!]));

describe('POST /predict', () => {
  it("answers the seed client's request unchanged, with values from the model's weights", async () => {
    const res = await server.post('/predict', { features: SEED_FEATURES, use_cache: false });
    expect(res.status).toBe(200);
    const body = await json(res);
    const want = churn2.proba(Object.values(SEED_FEATURES));
    expect(body).toMatchObject({
      model: 'churn',
      model_version: '2',
      cached: false,
      prediction: want.indexOf(Math.max(...want)),
    });
    expect(body.probability).toBeCloseTo(want[1]!, 5);
    expect(body.probabilities.stays).toBeCloseTo(want[0]!, 5);
    expect(body.probabilities.churns).toBeCloseTo(want[1]!, 5);
    expect(body.label).toBe(churn2.labels[body.prediction]);
    // float32 carries ~7 significant digits: /predict prints probabilities to 7 decimal places.
    for (const p of [body.probability, ...Object.values(body.probabilities as Record<string, number>)]) {
      expect(Math.round(p * 1e7) / 1e7).toBe(p);
    }
    expect(body.request_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(typeof body.latency_ms).toBe('number');
    expect(Number.isNaN(Date.parse(body.timestamp))).toBe(false);
  });

  it('gives the same answer for named features in any order and for the array in model order', async () => {
    const reversed = Object.fromEntries(Object.entries(SEED_FEATURES).reverse());
    const answers = await Promise.all(
      [SEED_FEATURES, reversed, Object.values(SEED_FEATURES)].map(async (features) =>
        json(await server.post('/predict', { features })),
      ),
    );
    expect(answers[1].probability).toBe(answers[0].probability);
    expect(answers[2].probability).toBe(answers[0].probability);
  });

  it('serves an older version when asked, and echoes the request id', async () => {
    const res = await server.post('/predict', { features: SEED_FEATURES, version: 1, request_id: 'abc-1' });
    const body = await json(res);
    expect(body.model_version).toBe('1');
    expect(body.request_id).toBe('abc-1');
    expect(body.probability).toBeCloseTo(churn1.proba(Object.values(SEED_FEATURES))[1]!, 5);
  });

  it('takes several rows as number[][] (seed 001 shape) and answers each in order', async () => {
    const iris = referenceModel('iris', '1');
    const x = [
      [5.1, 3.5, 1.4, 0.2],
      [6.2, 2.9, 4.3, 1.3],
      [7.7, 3.0, 6.1, 2.3],
    ];
    const body = await (await server.post('/predict', { model: 'iris', features: x })).json();
    expect(body.predictions.map((p: { label: string }) => p.label)).toEqual([
      'setosa',
      'versicolor',
      'virginica',
    ]);
    body.predictions.forEach((p: { probabilities: Record<string, number> }, i: number) => {
      expect(p.probabilities.virginica).toBeCloseTo(iris.proba(x[i]!)[2]!, 5);
    });
  });

  it('packs concurrent requests into batches and routes every answer back to its own request', async () => {
    const before = await batchStats('churn', '2');
    const batch = rows(300, 7, 99).map((r) => r.map((v) => Math.abs(v) * 10));
    const answers = await Promise.all(
      batch.map((row) => server.post('/predict', { features: named(churn2.features, row) }).then(json)),
    );
    answers.forEach((a, i) => {
      expect(a.probability).toBeCloseTo(churn2.proba(batch[i]!)[1]!, 5);
    });
    const after = await batchStats('churn', '2');
    const batches = after.count - before.count;
    expect(after.sum - before.sum).toBe(300);
    expect(batches).toBeLessThan(300); // rows of different requests shared batches
  });
});

async function batchStats(model: string, version: string) {
  const text = await (await server.get('/metrics')).text();
  const read = (suffix: string) =>
    Number(
      new RegExp(`onnxserve_batch_rows_${suffix}\\{model="${model}",version="${version}"\\} (\\d+)`).exec(
        text,
      )?.[1] ?? 0,
    );
  return { sum: read('sum'), count: read('count') };
}

describe('POST /predict/batch', () => {
  it('takes the seed shape {"requests": [{"features": …}]} and answers in order', async () => {
    const ten = referenceModel('classifier-10', '1');
    const x = rows(25, 10, 5);
    const body = await (
      await server.post('/predict/batch', {
        model: 'classifier-10',
        requests: x.map((r) => ({ features: named(ten.features, r) })),
      })
    ).json();
    expect(body.count).toBe(25);
    body.predictions.forEach((p: { probability: number }, i: number) => {
      expect(p.probability).toBeCloseTo(ten.proba(x[i]!)[1]!, 5);
    });
  });

  it('takes {"instances": [[…]]} for models without feature names too', async () => {
    const fraud = referenceModel('fraud', '1');
    const x = rows(40, 20, 8);
    const body = await (await server.post('/predict/batch', { model: 'fraud', instances: x })).json();
    expect(body.predictions).toHaveLength(40);
    body.predictions.forEach((p: { probability: number }, i: number) => {
      expect(p.probability).toBeCloseTo(fraud.proba(x[i]!)[1]!, 5);
    });
  });
});

describe('bad input gets a 4xx with a JSON error naming the field', () => {
  for (const [what, path, body, status, code, field] of BAD_INPUT_CASES) {
    it(what, async () => {
      const res = await server.post(path, body);
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toMatch(/application\/json/);
      const got = await json(res);
      expect(got.error.code).toBe(code);
      expect(got.error.field).toBe(field);
      expect(got.error.message.length).toBeGreaterThan(5);
    });
  }

  it('a wrong content type: 415', async () => {
    for (const type of ['text/plain', 'application/jsonx', 'application/jsonp']) {
      const res = await fetch(`${server.url}/predict`, {
        method: 'POST',
        headers: { 'content-type': type },
        body: '{}',
      });
      expect(res.status, type).toBe(415);
      expect((await json(res)).error.code).toBe('ERR_CONTENT_TYPE');
    }
    const charset = await server.post(
      '/predict',
      { features: SEED_FEATURES },
      { 'content-type': 'application/json; charset=utf-8' },
    );
    expect(charset.status).toBe(200);
  });

  it('a body over the limit, declared or chunked: 413', async () => {
    const big = JSON.stringify({ features: SEED_FEATURES, pad: 'x'.repeat(5 * 1024 * 1024) });
    const declared = await server.post('/predict', big);
    expect(declared.status).toBe(413);
    expect((await json(declared)).error.code).toBe('ERR_BODY_TOO_LARGE');
    const stream = new Blob([big]).stream();
    const chunked = await fetch(`${server.url}/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect(chunked.status).toBe(413);
  });

  it('too many rows: 413', async () => {
    const res = await server.post('/predict/batch', {
      instances: Array.from({ length: 10_001 }, () => [1, 2, 3, 4, 5, 6, 7]),
    });
    expect(res.status).toBe(413);
    expect((await json(res)).error).toMatchObject({ code: 'ERR_TOO_MANY_ROWS', field: 'instances' });
  });

  it('an unknown route: 404 JSON', async () => {
    const res = await server.get('/nope');
    expect(res.status).toBe(404);
    expect((await json(res)).error.code).toBe('ERR_NOT_FOUND');
  });
});

describe('Open Inference Protocol v2', () => {
  const irisInput = (data: number[][]) => ({
    name: 'float_input',
    shape: [data.length, 4],
    datatype: 'FP32',
    data,
  });

  it('describes the server and each model', async () => {
    expect((await json(await server.get('/v2'))).name).toBe('onnx-serve');
    expect((await server.get('/v2/health/live')).status).toBe(200);
    expect((await server.get('/v2/health/ready')).status).toBe(200);
    expect(await json(await server.get('/v2/models/iris'))).toEqual({
      name: 'iris',
      versions: ['1'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'float_input', datatype: 'FP32', shape: [-1, 4] }],
      outputs: [
        { name: 'label', datatype: 'INT64', shape: [-1] },
        { name: 'probabilities', datatype: 'FP32', shape: [-1, 3] },
      ],
    });
    expect((await server.get('/v2/models/churn/versions/1/ready')).status).toBe(200);
    expect((await server.get('/v2/models/churn/versions/9/ready')).status).toBe(404);
  });

  it('infers with nested or flat data, returns the outputs asked for', async () => {
    const iris = referenceModel('iris', '1');
    const x = [
      [5.1, 3.5, 1.4, 0.2],
      [6.4, 3.2, 4.5, 1.5],
    ];
    const res = await server.post('/v2/models/iris/versions/1/infer', {
      id: 'r1',
      inputs: [irisInput(x)],
      outputs: [{ name: 'probabilities' }],
    });
    const body = await json(res);
    expect(body).toMatchObject({ model_name: 'iris', model_version: '1', id: 'r1' });
    expect(body.outputs).toHaveLength(1);
    expect(body.outputs[0]).toMatchObject({ name: 'probabilities', datatype: 'FP32', shape: [2, 3] });
    x.flatMap((r) => iris.proba(r)).forEach((p, i) => {
      expect(body.outputs[0].data[i]).toBeCloseTo(p, 5);
    });
    const flat = await (
      await server.post('/v2/models/iris/infer', { inputs: [{ ...irisInput(x), data: x.flat() }] })
    ).json();
    expect(flat.outputs.map((o: { name: string }) => o.name)).toEqual(['label', 'probabilities']);
    expect(flat.outputs[0]).toEqual({ name: 'label', datatype: 'INT64', shape: [2], data: [0, 1] });
  });

  it('answers errors as {"error": "..."}', async () => {
    const bad = [
      [{ inputs: [{ ...irisInput([[1, 2, 3, 4]]), datatype: 'FP64' }] }, 422, /takes FP32/],
      [{ inputs: [{ ...irisInput([[1, 2, 3]]), shape: [1, 3] }] }, 422, /dimension 1 must be 4/],
      [
        { inputs: [{ ...irisInput([[1, 2, 3, 4]]), shape: [2, 4] }] },
        422,
        /data has 1 entries; shape \[2,4\] nested 2 deep needs 2/,
      ],
      [{ inputs: [{ ...irisInput([[1, 2, 3, 4]]), name: 'x' }] }, 422, /no input 'x'/],
      [{ inputs: [irisInput([[1, 2, 3, 4]])], outputs: [{ name: 'nope' }] }, 422, /no output 'nope'/],
      [{ inputs: [irisInput([[1, 2, 'a' as unknown as number, 4]])] }, 422, /must be a number/],
      [{ inputs: [] }, 422, /inputs/],
      // An empty batch once failed the whole micro-batch it joined with a 500 (and its neighbours' rows).
      [{ inputs: [{ ...irisInput([]), shape: [0, 4] }] }, 422, /empty dimension 0/],
      [{ inputs: [{ ...irisInput([[1, 2, 3, 4]]), data: [[[1, 2, 3, 4]]] }] }, 422, /nested deeper/],
    ] as const;
    for (const [body, status, message] of bad) {
      const res = await server.post('/v2/models/iris/infer', body);
      expect(res.status).toBe(status);
      const got = await json(res);
      expect(typeof got.error).toBe('string');
      expect(got.error).toMatch(message);
    }
    // 50,000 levels of nesting once overflowed the stack (500); each level is refused at the rank's depth.
    const deep = `{"inputs":[{"name":"float_input","shape":[1,4],"datatype":"FP32","data":${'['.repeat(50_000)}${']'.repeat(50_000)}}]}`;
    const res = await server.post('/v2/models/iris/infer', deep);
    expect(res.status).toBe(422);
    expect((await json(res)).error).toMatch(/inputs\[0\]\.data is nested deeper/);
    const missing = await server.post('/v2/models/nope/infer', { inputs: [irisInput([[1, 2, 3, 4]])] });
    expect(missing.status).toBe(404);
    expect((await json(missing)).error).toMatch(/not loaded/);
  });
});

describe('health, models, docs and metrics', () => {
  it('health has the seed fields and every loaded version', async () => {
    const body = await (await server.get('/health')).json();
    expect(body).toMatchObject({ status: 'healthy', ready: true, model_version: '2' });
    expect(body.models).toEqual({
      churn: ['1', '2'],
      'classifier-10': ['1'],
      fraud: ['1'],
      iris: ['1'],
      'mlp-large': ['1'],
    });
    expect((await server.get('/health/live')).status).toBe(200);
    expect((await server.get('/health/ready')).status).toBe(200);
  });

  it('lists models and describes one with its signature, hash and metadata', async () => {
    const list = await (await server.get('/models')).json();
    expect(list.default_model).toBe('churn');
    expect(list.models.map((m: { name: string }) => m.name)).toEqual([
      'churn',
      'classifier-10',
      'fraud',
      'iris',
      'mlp-large',
    ]);
    const churn = await (await server.get('/models/churn')).json();
    expect(churn.default_version).toBe('2');
    const v1 = churn.versions[0];
    expect(v1.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(v1.feature_names).toEqual(churn1.features);
    expect(v1.inputs[0]).toEqual({ name: 'float_input', type: 'float32', shape: ['N', 7] });
    expect(v1.training.dataset.synthetic).toBe(true);
    expect((await server.get('/models/nope')).status).toBe(404);
    const info = await (await server.get('/model/info')).json();
    expect(info).toMatchObject({ name: 'churn', version: '2', feature_count: 7 });
  });

  it('publishes OpenAPI and Swagger UI', async () => {
    const doc = await (await server.get('/openapi.json')).json();
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/predict', '/predict/batch', '/v2/models/{name}/infer']),
    );
    expect(doc.components.schemas.PredictRequest).toBeDefined();
    const docs = await server.get('/docs');
    expect(docs.status).toBe(200);
    expect(await docs.text()).toMatch(/swagger/i);
  });

  it('exports request, model, batch, queue and pool metrics', async () => {
    await server.post('/predict', { features: SEED_FEATURES });
    const text = await (await server.get('/metrics')).text();
    for (const name of [
      'onnxserve_http_requests_total{route="/predict",method="POST",status="200"}',
      'onnxserve_http_request_duration_seconds_bucket',
      'onnxserve_inference_rows_total{model="churn",version="2"}',
      'onnxserve_batch_rows_bucket',
      'onnxserve_queue_wait_seconds_bucket',
      'onnxserve_compute_seconds_bucket',
      'onnxserve_errors_total{code="ERR_FEATURE_MISSING"}',
      'onnxserve_pool_workers_live 2',
      'onnxserve_pool_utilization',
      'onnxserve_pool_queued_batches',
      'onnxserve_batcher_queued_rows',
      'onnxserve_model_load_seconds{model="iris",version="1"}',
      'onnxserve_model_info{model="churn",version="1",sha256=',
      'onnxserve_process_cpu_seconds_total',
    ]) {
      expect(text, name).toContain(name);
    }
  });

  it("times each model's load on its own (it was one figure, the whole load, for every model)", async () => {
    const text = await (await server.get('/metrics')).text();
    const seconds = [
      ...text.matchAll(/^onnxserve_model_load_seconds\{model="([^"]+)",version="([^"]+)"\} (\S+)$/gm),
    ].map((m) => ({ model: `${m[1]}@${m[2]}`, s: Number(m[3]) }));
    expect(seconds.length).toBeGreaterThanOrEqual(6);
    for (const { model, s } of seconds) expect(s, model).toBeGreaterThan(0);
    expect(new Set(seconds.map((x) => x.s)).size).toBe(seconds.length);
    // The metric and /models/{name} say the same.
    const iris = await json(await server.get('/models/iris'));
    const irisMetric = seconds.find((x) => x.model === 'iris@1')!.s;
    expect(iris.versions[0].load_seconds).toBeCloseTo(irisMetric, 3);
  });
});

describe('found by probing the HTTP surface', () => {
  it('v2 data nested against its shape, outputs asked twice, and rows past the bound are refused, naming the field', async () => {
    const v2 = (body: unknown) => server.post('/v2/models/churn/infer', body);
    const seven = (k: number) => Array.from({ length: 7 }, (_, i) => k * 7 + i + 1);
    // 14 values, but not two rows of seven: the answer would be built from rows the client never sent.
    const misnested = await v2({
      inputs: [
        {
          name: 'float_input',
          shape: [2, 7],
          datatype: 'FP32',
          data: [[1], seven(0).concat(seven(1)).slice(1)],
        },
      ],
    });
    expect(misnested.status).toBe(422);
    expect((await json(misnested)).error).toMatch(/inputs\[0\]\.data\[0\] has 1 entries/);
    const mixed = await v2({
      inputs: [{ name: 'float_input', shape: [2, 7], datatype: 'FP32', data: [...seven(0), seven(1)] }],
    });
    expect(mixed.status).toBe(422);
    // Nested as the shape says, and flat: both answer, alike.
    const nested = await json(
      await v2({
        inputs: [{ name: 'float_input', shape: [2, 7], datatype: 'FP32', data: [seven(0), seven(1)] }],
      }),
    );
    const flat = await json(
      await v2({
        inputs: [{ name: 'float_input', shape: [2, 7], datatype: 'FP32', data: [...seven(0), ...seven(1)] }],
      }),
    );
    expect(nested.outputs).toEqual(flat.outputs);
    const twice = await v2({
      inputs: [{ name: 'float_input', shape: [1, 7], datatype: 'FP32', data: seven(0) }],
      outputs: [{ name: 'label' }, { name: 'label' }],
    });
    expect(twice.status).toBe(422);
    expect((await json(twice)).error).toMatch(/twice/);
    // Refused on the declared shape, before 700,000 values are read.
    const huge = await v2({
      inputs: [
        { name: 'float_input', shape: [100_000, 7], datatype: 'FP32', data: new Array(700_000).fill(1) },
      ],
    });
    expect(huge.status).toBe(413);
    expect((await json(huge)).error).toMatch(/100000 rows/);
  });

  it('a client that leaves mid-body is counted as 499, never as a 500 or an internal error', async () => {
    const { port } = new URL(server.url);
    await new Promise<void>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => {
        socket.write(
          'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{',
        );
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 200);
      });
      socket.on('error', reject);
    });
    await expect
      .poll(async () =>
        (await (await server.get('/metrics')).text()).match(/route="\/predict",method="POST",status="499"/),
      )
      .toBeTruthy();
    const text = await (await server.get('/metrics')).text();
    expect(text).not.toMatch(/status="500"/);
    expect(text).not.toMatch(/code="ERR_INTERNAL"/);
  });

  it('an unknown path is 404 even when it looks like a known one; a known path with the wrong method is 405', async () => {
    expect((await server.get('/openapiXjson')).status).toBe(404);
    const wrong = await server.post('/health', {});
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('GET, HEAD');
  });

  it('checks /model/info query parameters against the document', async () => {
    const res = await server.get('/model/info?model=&version=');
    expect(res.status).toBe(422);
    expect((await json(res)).error).toMatchObject({ code: 'ERR_VALIDATION', field: 'model' });
    expect((await json(await server.get('/model/info?model=iris'))).name).toBe('iris');
  });

  it('a row that fits no model is judged by the model it shares most feature names with', async () => {
    const res = await server.post('/predict', {
      features: { sepal_length: 5.1, sepal_width: 3.5, petal_length: 1.4 },
    });
    expect(res.status).toBe(422);
    expect((await json(res)).error).toMatchObject({
      code: 'ERR_FEATURE_MISSING',
      field: 'features.petal_width',
    });
    const deep = await json(await server.post('/predict', { features: [[[1, 2, 3, 4]]] }));
    expect(deep.error.message).toMatch(/nested too deep/);
  });

  it('X-Request-Id: empty is ignored, over 200 characters is refused by name', async () => {
    const empty = await json(
      await server.post('/predict', { features: SEED_FEATURES }, { 'x-request-id': '' }),
    );
    expect(empty.request_id).toMatch(/^[0-9a-f-]{36}$/);
    const long = await server.post(
      '/predict',
      { features: SEED_FEATURES },
      { 'x-request-id': 'x'.repeat(201) },
    );
    expect(long.status).toBe(422);
    expect((await json(long)).error.field).toBe('x-request-id');
  });

  it('v2: an unknown model is 404 whatever the body; parameters.use_cache must be a boolean', async () => {
    const res = await fetch(`${server.url}/v2/models/nope/infer`, { method: 'POST', body: 'not json' });
    expect(res.status).toBe(404);
    const bad = await server.post('/v2/models/iris/infer', {
      parameters: { use_cache: 'x' },
      inputs: [{ name: 'float_input', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }],
    });
    expect(bad.status).toBe(422);
    expect((await json(bad)).error).toMatch(/use_cache/);
  });
});
