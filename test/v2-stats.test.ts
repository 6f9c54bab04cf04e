/**
 * Model configuration, repository index and statistics over real HTTP with the real worker pool: the
 * configuration reports the server's own batching settings, and the statistics' numbers are measured (a
 * batch delay of 40 ms shows up as queue time, batched requests share executions, failures are counted).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, startTestServer } from './server.js';

const DELAY_MS = 40;
let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  server = await startTestServer({
    BATCH_MAX_DELAY_MS: String(DELAY_MS),
    BATCH_MAX_ROWS: '64',
    BATCH_MAX_QUEUED_ROWS: '5000',
    MAX_ROWS_PER_REQUEST: '5000',
    CACHE: 'off',
  });
});
afterAll(async () => {
  await server?.close();
});

const ROW = [24, 75.5, 1800, 12, 2, 1, 4.5];
const infer = (rows: number, model = 'churn', version = '2') =>
  server.post(`/v2/models/${model}/versions/${version}/infer`, {
    inputs: [
      {
        name: 'float_input',
        shape: [rows, 7],
        datatype: 'FP32',
        data: Array.from({ length: rows }, (_, r) => ROW.map((v) => v + r)),
      },
    ],
  });

// biome-ignore lint/suspicious/noExplicitAny: a stats body, checked by assertions
const stat = async (path: string): Promise<any> => {
  const res = await server.get(path);
  expect(res.status).toBe(200);
  const body = await json(res);
  expect(body.model_stats).toHaveLength(1);
  return body.model_stats[0];
};

describe('GET /v2/models/{name}/config', () => {
  it("reports the version's tensors and the server's own batching, queue and instance settings", async () => {
    const res = await server.get('/v2/models/churn/config');
    expect(res.status).toBe(200);
    const config = await json(res);
    expect(config).toMatchObject({
      name: 'churn',
      platform: 'onnxruntime_onnx',
      backend: 'onnxruntime',
      version_policy: { all: {} },
      max_batch_size: 64,
      input: [{ name: 'float_input', data_type: 'TYPE_FP32', dims: [7] }],
      dynamic_batching: {
        max_queue_delay_microseconds: DELAY_MS * 1000,
        default_queue_policy: { max_queue_size: 5000, timeout_action: 'REJECT' },
      },
      instance_group: [{ kind: 'KIND_CPU', count: 2 }],
    });
    expect(config.output).toEqual([
      { name: 'label', data_type: 'TYPE_INT64', format: 'FORMAT_NONE', dims: [1], reshape: { shape: [] } },
      { name: 'probabilities', data_type: 'TYPE_FP32', format: 'FORMAT_NONE', dims: [2] },
    ]);
    const v1 = await json(await server.get('/v2/models/iris/versions/1/config'));
    expect(v1.input[0].dims).toEqual([4]);
    expect((await server.get('/v2/models/churn/versions/9/config')).status).toBe(404);
    expect((await server.get('/v2/models/nope/config')).status).toBe(404);
  });
});

describe('POST /v2/repository/index', () => {
  it('lists every version READY, with an empty body and no Content-Type as Triton sends it', async () => {
    const res = await fetch(`${server.url}/v2/repository/index`, { method: 'POST', body: new Uint8Array(0) });
    expect(res.status).toBe(200);
    const index = await json(res);
    const models = await json(await server.get('/models'));
    const versions = models.models.flatMap((m: { name: string; versions: string[] }) =>
      m.versions.map((v) => `${m.name}@${v}`),
    );
    expect(index.map((m: { name: string; version: string }) => `${m.name}@${m.version}`).sort()).toEqual(
      versions.sort(),
    );
    for (const m of index) expect(m).toMatchObject({ state: 'READY', reason: '' });
    const bad = await server.post('/v2/repository/index', { ready: 'yes' });
    expect(bad.status).toBe(422);
    expect((await json(bad)).error).toMatch(/ready/);
  });
});

describe('GET /v2/models/…/stats', () => {
  it('counts requests, rows and executions, and measures the batch delay as queue time', async () => {
    const before = await stat('/v2/models/churn/versions/2/stats');
    // One at a time: each waits out the batch delay alone, and runs alone.
    for (const rows of [1, 3, 3]) expect((await infer(rows)).status).toBe(200);
    const after = await stat('/v2/models/churn/versions/2/stats');
    expect(after.inference_count - before.inference_count).toBe(7);
    expect(after.execution_count - before.execution_count).toBe(3);
    const d = (k: string) => ({
      count: after.inference_stats[k].count - before.inference_stats[k].count,
      ns: after.inference_stats[k].ns - before.inference_stats[k].ns,
    });
    expect(d('success').count).toBe(3);
    expect(d('queue').count).toBe(3);
    // Each request waited the whole delay for company before its batch was sent.
    expect(d('queue').ns).toBeGreaterThanOrEqual(3 * DELAY_MS * 1e6 * 0.95);
    expect(d('compute_infer').count).toBe(3);
    expect(d('compute_infer').ns).toBeGreaterThan(0);
    // The parts add up: a request's queue and compute time are within its whole duration.
    const parts = d('queue').ns + d('compute_input').ns + d('compute_infer').ns + d('compute_output').ns;
    expect(parts).toBeLessThanOrEqual(d('success').ns);
    const sizes = Object.fromEntries(
      after.batch_stats.map((b: { batch_size: number; compute_infer: { count: number } }) => [
        b.batch_size,
        b.compute_infer.count,
      ]),
    );
    const sizesBefore = Object.fromEntries(
      before.batch_stats.map((b: { batch_size: number; compute_infer: { count: number } }) => [
        b.batch_size,
        b.compute_infer.count,
      ]),
    );
    expect((sizes[1] ?? 0) - (sizesBefore[1] ?? 0)).toBe(1);
    expect((sizes[3] ?? 0) - (sizesBefore[3] ?? 0)).toBe(2);
    expect(after.last_inference).toBeGreaterThan(Date.now() - 60_000);
  });

  it('counts concurrent requests batched together as fewer executions', async () => {
    const before = await stat('/v2/models/churn/versions/1/stats');
    const answers = await Promise.all(Array.from({ length: 8 }, () => infer(1, 'churn', '1')));
    expect(answers.map((r) => r.status)).toEqual(Array(8).fill(200));
    const after = await stat('/v2/models/churn/versions/1/stats');
    expect(after.inference_stats.success.count - before.inference_stats.success.count).toBe(8);
    expect(after.inference_count - before.inference_count).toBe(8);
    expect(after.execution_count - before.execution_count).toBeLessThan(8);
    expect(after.batch_stats.some((b: { batch_size: number }) => b.batch_size > 1)).toBe(true);
  });

  it("times a large request's bulk parts as executions of the batch size", async () => {
    const before = await stat('/v2/models/churn/versions/2/stats');
    expect((await infer(200)).status).toBe(200);
    const after = await stat('/v2/models/churn/versions/2/stats');
    // 200 rows in parts of 64: four model runs, one request.
    expect(after.execution_count - before.execution_count).toBe(4);
    expect(after.inference_count - before.inference_count).toBe(200);
    expect(after.inference_stats.compute_infer.count - before.inference_stats.compute_infer.count).toBe(1);
    const size64 = (s: { batch_stats: { batch_size: number; compute_infer: { count: number } }[] }) =>
      s.batch_stats.find((b) => b.batch_size === 64)?.compute_infer.count ?? 0;
    expect(size64(after) - size64(before)).toBe(3);
  });

  it('counts a refused request as a failure of the version it named', async () => {
    const before = await stat('/v2/models/iris/stats');
    const res = await server.post('/v2/models/iris/infer', {
      inputs: [{ name: 'float_input', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3] }],
    });
    expect(res.status).toBe(422);
    const after = await stat('/v2/models/iris/stats');
    expect(after.inference_stats.fail.count - before.inference_stats.fail.count).toBe(1);
    expect(after.inference_stats.success.count).toBe(before.inference_stats.success.count);
    expect(after.execution_count).toBe(before.execution_count);
  });

  it('counts /predict requests too, and lists every version when no model is named', async () => {
    const before = await stat('/v2/models/churn/versions/2/stats');
    const res = await server.post('/predict', { features: ROW, model: 'churn', version: '2' });
    expect(res.status).toBe(200);
    const after = await stat('/v2/models/churn/versions/2/stats');
    expect(after.inference_stats.success.count - before.inference_stats.success.count).toBe(1);
    const all = await json(await server.get('/v2/models/stats'));
    const index = await json(await fetch(`${server.url}/v2/repository/index`, { method: 'POST' }));
    expect(all.model_stats).toHaveLength(index.length);
    const churn = await json(await server.get('/v2/models/churn/stats'));
    expect(churn.model_stats.map((s: { version: string }) => s.version)).toEqual(['1', '2']);
    expect((await server.get('/v2/models/nope/stats')).status).toBe(404);
    expect((await server.get('/v2/models/churn/versions/7/stats')).status).toBe(404);
  });
});
