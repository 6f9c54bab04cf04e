/** The two-tier cache against the machine's real Redis, with two app instances sharing it. */
import { copyFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODELS_DIR, referenceModel, rows } from './reference.js';
import { json, startTestServer } from './server.js';
import { freshRedisDb } from './services.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;
let redisUrl: string;
let a: Server;
let b: Server;
const churn2 = referenceModel('churn', '2');
const named = (row: number[]) => Object.fromEntries(churn2.features.map((f, i) => [f, row[i]!]));

const metric = async (s: Server, pattern: string) => {
  const text = await (await s.get('/metrics')).text();
  const line = text.split('\n').find((l) => l.startsWith(pattern));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
};

beforeAll(async () => {
  redisUrl = await freshRedisDb(11);
  [a, b] = await Promise.all([
    // These tests count Redis round trips and hits, not its latency budget (25 ms by default): under a
    // loaded CI machine an MGET once took longer, was counted as a failure, and failed the count.
    startTestServer({ REDIS_URL: redisUrl, REDIS_TIMEOUT_MS: '2000' }),
    startTestServer({ REDIS_URL: redisUrl, REDIS_TIMEOUT_MS: '2000' }),
  ]);
});
afterAll(async () => {
  await Promise.all([a?.close(), b?.close()]);
});

describe('two instances sharing Redis', () => {
  it('a miss on one instance, then an L2 hit on the other, then L1 there', async () => {
    const features = named([12, 70.5, 846, 12, 2, 1, 3.2]);
    const first = await json(await a.post('/predict', { features }));
    expect(first).toMatchObject({ cached: false, cache_tier: null });
    await expect.poll(async () => (await json(await b.post('/predict', { features }))).cache_tier).toBe('l2');
    const third = await json(await b.post('/predict', { features }));
    expect(third).toMatchObject({ cached: true, cache_tier: 'l1' });
    expect(third.probability).toBe(first.probability);
    expect(third.probability).toBeCloseTo(churn2.proba([12, 70.5, 846, 12, 2, 1, 3.2])[1]!, 5);
  });

  it('named features in another order, and the same row as an array, hit the same entry', async () => {
    const row = [30, 55.25, 1657.5, 24, 3, 0, 4.1];
    const first = await json(await a.post('/predict', { features: named(row) }));
    expect(first.cache_tier).toBeNull();
    const reversed = Object.fromEntries(Object.entries(named(row)).reverse());
    expect((await json(await a.post('/predict', { features: reversed }))).cache_tier).toBe('l1');
    expect((await json(await a.post('/predict', { features: row }))).cache_tier).toBe('l1');
  });

  it('use_cache: false reads and writes neither tier', async () => {
    const row = [5, 99, 495, 1, 1, 4, 1.5];
    const off = await json(await a.post('/predict', { features: row, use_cache: false }));
    expect(off.cached).toBe(false);
    expect((await json(await a.post('/predict', { features: row }))).cache_tier).toBeNull();
    expect((await json(await a.post('/predict', { features: row, use_cache: false }))).cache_tier).toBeNull();
  });

  it('looks a whole batch up in one Redis round trip and says which rows were cached', async () => {
    const x = rows(50, 7, 77).map((r) => r.map(Math.abs));
    await a.post('/predict/batch', { instances: x.slice(0, 20) }); // these 20 reach Redis
    const mgetBefore = await metric(b, 'onnxserve_redis_calls_total{op="mget",result="ok"}');
    const body = await json(await b.post('/predict/batch', { instances: x }));
    expect(await metric(b, 'onnxserve_redis_calls_total{op="mget",result="ok"}')).toBe(mgetBefore + 1);
    expect(body.cached_rows).toBe(20);
    expect(body.cached).toBe(false);
    body.predictions.forEach((p: { probability: number }, i: number) => {
      expect(p.probability).toBeCloseTo(churn2.proba(x[i]!)[1]!, 5);
    });
  });

  it('concurrent identical misses share one inference', async () => {
    const row = [41, 20.5, 840.5, 12, 5, 2, 2.2];
    const rowsBefore = await metric(a, 'onnxserve_batch_rows_sum{model="churn",version="2"}');
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => a.post('/predict', { features: row }).then(json)),
    );
    expect(new Set(answers.map((r) => r.probability)).size).toBe(1);
    expect(await metric(a, 'onnxserve_batch_rows_sum{model="churn",version="2"}')).toBe(rowsBefore + 1);
  });

  it("a shared inference that fails for its own client's reasons does not fail the requests that shared it", async () => {
    // Found by the fuzz test: the first request's 0.001 ms deadline failed its row's computation, and the
    // identical request waiting on it got the same 504 under its own 30 s deadline.
    for (let n = 0; n < 5; n++) {
      const features = [3 + n, 44.5, 133.5 + n, 12, 2, 1, 4.5];
      const [hasty, patient, alsoPatient] = await Promise.all([
        a.post('/predict', { features, timeout_ms: 0.001 }),
        a.post('/predict', { features }),
        a.post('/predict', { features }, { 'x-request-id': `p-${n}` }),
      ]);
      expect(hasty.status).toBe(504);
      expect(patient.status).toBe(200);
      expect(alsoPatient.status).toBe(200);
      expect((await json(patient)).probability).toBe((await json(alsoPatient)).probability);
    }
  });

  it('/v2 infer shares the cache per row and reports cached rows', async () => {
    const x = [[5.1, 3.5, 1.4, 0.2]];
    const input = { inputs: [{ name: 'float_input', shape: [1, 4], datatype: 'FP32', data: x }] };
    expect((await json(await a.post('/v2/models/iris/infer', input))).parameters.cached_rows).toBe(0);
    expect((await json(await a.post('/v2/models/iris/infer', input))).parameters.cached_rows).toBe(1);
  });

  it('reports Redis in /health and exports hit and miss counts by tier', async () => {
    expect((await json(await a.get('/health'))).redis_connected).toBe(true);
    expect(await metric(b, 'onnxserve_cache_lookups_total{tier="l2",result="hit"}')).toBeGreaterThan(0);
    expect(await metric(a, 'onnxserve_cache_lookups_total{tier="l1",result="hit"}')).toBeGreaterThan(0);
    expect(await metric(a, 'onnxserve_redis_connected')).toBe(1);
  });
});

it('a model file replaced with different weights never serves the old cached answer', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'models-'));
  cpSync(join(MODELS_DIR, 'churn', '2'), join(dir, 'churn', '1'), { recursive: true });
  const url = await freshRedisDb(12);
  const row = [20, 80, 1600, 12, 2, 3, 2.5];
  const before = await startTestServer({ MODELS_DIR: dir, REDIS_URL: url });
  const old = await json(await before.post('/predict', { features: row }));
  expect((await json(await before.post('/predict', { features: row }))).cache_tier).toBe('l1');
  await before.close();

  // Same name, same version, same signature: new weights.
  copyFileSync(join(MODELS_DIR, 'churn', '1', 'model.onnx'), join(dir, 'churn', '1', 'model.onnx'));
  const after = await startTestServer({ MODELS_DIR: dir, REDIS_URL: url });
  try {
    const fresh = await json(await after.post('/predict', { features: row }));
    expect(fresh.cache_tier).toBeNull();
    expect(fresh.probability).not.toBe(old.probability);
    expect(fresh.probability).toBeCloseTo(referenceModel('churn', '1').proba(row)[1]!, 5);
  } finally {
    await after.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
