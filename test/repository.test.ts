/**
 * The repository API over real HTTP with the real worker pool: unloading a model refuses its new requests
 * (503) while the ones already accepted finish, ends the workers that held its sessions, and loading it
 * again creates and warms them before it serves; the other models serve throughout.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey, keyDigestHex, keyLine } from '../src/core/access.js';
import { json, startTestServer } from './server.js';

/** Load and unload are admin routes: they need a key with the admin scope. */
const ADMIN_KEY = generateKey();
const PREDICT_KEY = generateKey();
const API_KEYS = [
  keyLine('ops', ['admin'], keyDigestHex(ADMIN_KEY)),
  keyLine('scorer', ['predict'], keyDigestHex(PREDICT_KEY)),
].join('\n');

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  // Rows wait 400 ms for company, so requests are still in flight when an unload arrives.
  server = await startTestServer({ BATCH_MAX_DELAY_MS: '400', CACHE: 'off', API_KEYS });
});
afterAll(async () => {
  await server?.close();
});

const IRIS = [5.1, 3.5, 1.4, 0.2];
const CHURN = [24, 75.5, 1800, 12, 2, 1, 4.5];
const inferIris = () =>
  server.post('/v2/models/iris/infer', {
    inputs: [{ name: 'float_input', shape: [1, 4], datatype: 'FP32', data: IRIS }],
  });
const inferChurn = () =>
  server.post('/v2/models/churn/infer', {
    inputs: [{ name: 'float_input', shape: [1, 7], datatype: 'FP32', data: CHURN }],
  });
/** `key` null: sent with no key. */
const action = (name: string, what: 'load' | 'unload', body?: unknown, key: string | null = ADMIN_KEY) =>
  fetch(`${server.url}/v2/repository/models/${name}/${what}`, {
    method: 'POST',
    headers: key === null ? {} : { 'x-api-key': key },
    ...(body === undefined ? {} : { body: new TextEncoder().encode(JSON.stringify(body)) }),
  });
const index = async () =>
  (await json(await fetch(`${server.url}/v2/repository/index`, { method: 'POST' }))) as {
    name: string;
    version: string;
    state: string;
    reason: string;
  }[];
/** This process's OS threads: the server runs in it, so its workers (and their runtimes' threads) count. */
const threads = () => Number(/^Threads:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]);

describe('POST /v2/repository/models/{name}/unload and /load', () => {
  it('are admin routes: refused without a key, with an unknown one, or one that lacks the admin scope', async () => {
    expect((await action('iris', 'unload', undefined, null)).status).toBe(401);
    expect((await action('iris', 'unload', undefined, generateKey())).status).toBe(401);
    expect((await action('iris', 'unload', undefined, PREDICT_KEY)).status).toBe(403);
    const other = await startTestServer({ CACHE: 'off' });
    try {
      // No admin key configured at all: refused outright.
      const res = await fetch(`${other.url}/v2/repository/models/iris/unload`, { method: 'POST' });
      expect(res.status).toBe(403);
      expect((await other.get('/v2/models/iris/ready')).status).toBe(200);
    } finally {
      await other.close();
    }
    expect((await server.get('/v2/models/iris/ready')).status).toBe(200);
  });

  it('unloads: new requests 503 naming the way back, those in flight answered, other models serve', async () => {
    const want = await json(await inferChurn());
    // Accepted before the unload: waiting in the batcher when it arrives.
    const inFlight = Array.from({ length: 12 }, () => inferChurn());
    // Every one accepted (its row waiting in the batcher) before the unload is sent.
    for (let i = 0; i < 100 && (await json(await server.get('/health'))).queued_rows < 12; i++) {
      await new Promise((r) => setTimeout(r, 2));
    }
    expect((await json(await server.get('/health'))).queued_rows).toBe(12);
    const unloaded = await action('churn', 'unload', { parameters: { unload_dependents: false } });
    expect(unloaded.status).toBe(200);
    const answers = await Promise.all(inFlight);
    expect(answers.map((r) => r.status)).toEqual(Array(12).fill(200));
    for (const r of answers) expect((await json(r)).outputs).toEqual(want.outputs);

    const refused = await inferChurn();
    expect(refused.status).toBe(503);
    expect((await json(refused)).error).toMatch(/'churn' is unloaded.*\/v2\/repository\/models\/churn\/load/);
    const predict = await server.post('/predict', { features: CHURN, model: 'churn' });
    expect(predict.status).toBe(503);
    expect((await json(predict)).error.code).toBe('ERR_MODEL_UNAVAILABLE');
    expect((await server.get('/v2/models/churn/ready')).status).toBe(503);
    expect((await server.get('/v2/models/churn/versions/1/ready')).status).toBe(503);
    const churn = (await index()).filter((m) => m.name === 'churn');
    expect(churn).toEqual([
      { name: 'churn', version: '1', state: 'UNAVAILABLE', reason: 'unloaded' },
      { name: 'churn', version: '2', state: 'UNAVAILABLE', reason: 'unloaded' },
    ]);
    expect((await inferIris()).status).toBe(200);
    expect((await server.get('/v2/health/ready')).status).toBe(200);
    const health = await server.get('/health');
    expect(health.status).toBe(200);
    expect((await json(health)).model_version).toBeNull();
    // Unloading what is unloaded changes nothing.
    expect((await action('churn', 'unload')).status).toBe(200);
  });

  it('loads: sessions created and warmed before it serves, then it answers as before', async () => {
    const loaded = await action('churn', 'load', {});
    expect(loaded.status).toBe(200);
    expect(await json(loaded)).toEqual({ name: 'churn', state: 'READY', versions: ['1', '2'] });
    expect((await server.get('/v2/models/churn/ready')).status).toBe(200);
    const res = await inferChurn();
    expect(res.status).toBe(200);
    expect((await json(res)).outputs[1].data[0]).toBeCloseTo(0.8404669, 6);
    for (const m of await index()) expect(m.state).toBe('READY');
  });

  it('releases the workers that held the sessions: threads do not pile up over unload/load cycles', async () => {
    expect((await inferIris()).status).toBe(200);
    const before = threads();
    for (let i = 0; i < 4; i++) {
      expect((await action('fraud', 'unload')).status).toBe(200);
      expect((await action('fraud', 'load')).status).toBe(200);
    }
    expect((await inferIris()).status).toBe(200);
    // Each cycle started a new pool twice (two workers each); had old pools lived on, 16 more workers.
    expect(threads()).toBeLessThanOrEqual(before + 2);
  });

  it('refuses what it cannot do, naming why', async () => {
    const unknown = await action('nope', 'load');
    expect(unknown.status).toBe(404);
    expect((await json(unknown)).error).toMatch(/no model 'nope'/);
    expect((await action('nope', 'unload')).status).toBe(404);
    const override = await action('churn', 'load', { parameters: { config: '{}' } });
    expect(override.status).toBe(422);
    expect((await json(override)).error).toMatch(/parameters\.config/);
    const notJson = await fetch(`${server.url}/v2/repository/models/churn/load`, {
      method: 'POST',
      headers: { 'x-api-key': ADMIN_KEY },
      body: '{',
    });
    expect(notJson.status).toBe(415); // a string body is sent as text/plain
    const badJson = await action('churn', 'unload', { parameters: 5 });
    expect(badJson.status).toBe(422);
    expect((await server.get('/v2/models/churn/ready')).status).toBe(200);
  });
});

describe('the other models during an unload and a load', () => {
  let quick: typeof server;
  beforeAll(async () => {
    quick = await startTestServer({ CACHE: 'off', API_KEYS });
  });
  afterAll(async () => {
    await quick?.close();
  });
  const inferOn = (s: typeof server) =>
    s.post('/v2/models/iris/infer', {
      inputs: [{ name: 'float_input', shape: [1, 4], datatype: 'FP32', data: IRIS }],
    });
  const on = (s: typeof server, name: string, what: 'load' | 'unload') =>
    fetch(`${s.url}/v2/repository/models/${name}/${what}`, {
      method: 'POST',
      headers: { 'x-api-key': ADMIN_KEY },
    });

  it('serves the other models throughout an unload and a load', async () => {
    let stop = false;
    const statuses: number[] = [];
    const load = (async () => {
      while (!stop) statuses.push((await inferOn(quick)).status);
    })();
    expect((await on(quick, 'classifier-10', 'unload')).status).toBe(200);
    expect((await on(quick, 'classifier-10', 'load')).status).toBe(200);
    stop = true;
    await load;
    expect(statuses.length).toBeGreaterThan(10);
    expect(new Set(statuses)).toEqual(new Set([200]));
  });
});
