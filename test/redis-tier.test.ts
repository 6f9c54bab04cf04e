/**
 * The Redis tier's breaker as operators read it, and its values as the server trusts them: against a
 * redis-server of the test's own on a spare port (the machine's Redis is never stopped or reconfigured).
 */
import type { ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisTier, type RedisTier } from '../src/node/redis-tier.js';
import { json, startTestServer } from './server.js';
import { freshRedisDb, startRedisServer } from './services.js';

// DEBUG SLEEP holds this Redis busy on demand (Redis 7 allows DEBUG only when asked).
const DEBUG = ['--enable-debug-command', 'local'];
const port = 16900 + Math.floor(Math.random() * 500);
let redis: ChildProcess | undefined;
const tiers: RedisTier[] = [];
const clients: Redis[] = [];
afterAll(async () => {
  for (const t of tiers) await t.close();
  for (const c of clients) c.disconnect();
  redis?.kill('SIGKILL');
});

const untilTrue = (check: () => boolean, timeout = 10_000) =>
  expect.poll(check, { timeout, interval: 10 }).toBe(true);

describe('circuit', () => {
  it('is named as it is, and the tier is not "connected" while half-open', async () => {
    redis = await startRedisServer(port, DEBUG);
    const tier = createRedisTier({
      url: `redis://127.0.0.1:${port}/0`,
      ttlSeconds: 60,
      timeoutMs: 1500,
      breakAfter: 1,
      probeMs: 300,
    });
    tiers.push(tier);
    await untilTrue(() => tier.connected());
    expect(tier.circuit()).toBe('closed');
    expect(tier.status()).toBe('connected');

    redis.kill('SIGKILL');
    await untilTrue(() => tier.client.status !== 'ready');
    // A lookup with Redis gone fails at once (no offline queue): the circuit opens.
    expect(await tier.getMany(['k'])).toEqual([undefined]);
    await untilTrue(() => tier.circuit() === 'open');
    expect(tier.connected()).toBe(false);
    expect(tier.status()).toBe('unavailable (circuit open)');

    // Redis back, but busy: each DEBUG SLEEP holds it 0.6 s, so the breaker's trial PING waits in half-open.
    redis = await startRedisServer(port, DEBUG);
    await untilTrue(() => tier.client.status === 'ready');
    const side = new Redis(`redis://127.0.0.1:${port}/0`);
    clients.push(side);
    let busy = true;
    const sleeper = (async () => {
      while (busy) await side.call('DEBUG', 'SLEEP', '0.6').catch(() => {});
    })();
    try {
      await untilTrue(() => tier.circuit() === 'half-open');
      expect(tier.client.status).toBe('ready');
      expect(tier.connected()).toBe(false);
      expect(tier.status()).toBe('unavailable (circuit half-open)');
    } finally {
      busy = false;
      await sleeper;
    }
    await untilTrue(() => tier.circuit() === 'closed');
    expect(tier.connected()).toBe(true);
  });

  it('does not blame Redis for a stalled event loop', async () => {
    redis ??= await startRedisServer(port, DEBUG);
    const url = `redis://127.0.0.1:${port}/0`;
    const writer = new Redis(url);
    clients.push(writer);
    await writer.set('stall-key', JSON.stringify({ probabilities: [0.25, 0.75] }));
    const tier = createRedisTier({ url, ttlSeconds: 60, timeoutMs: 25, breakAfter: 1, probeMs: 60_000 });
    tiers.push(tier);
    await untilTrue(() => tier.connected());
    for (let i = 0; i < 5; i++) {
      const lookup = tier.getMany(['stall-key']);
      // The MGET goes out in a setImmediate; this one runs right after it. The reply arrives within a ms,
      // but this thread is then busy for 100 ms, past the 25 ms budget.
      await new Promise((r) => setImmediate(r));
      const until = performance.now() + 100;
      while (performance.now() < until) {}
      expect(await lookup).toEqual([{ probabilities: [0.25, 0.75] }]);
    }
    expect(tier.circuit()).toBe('closed');
  });
});

describe('values read back', () => {
  it('are checked before use: a row that does not fit the model is a miss, never a wrong answer or a 500', async () => {
    const url = await freshRedisDb(13);
    const env = { REDIS_URL: url, REDIS_TIMEOUT_MS: '2000' };
    const [writer, reader] = await Promise.all([startTestServer(env), startTestServer(env)]);
    try {
      const rows = Array.from({ length: 6 }, (_, i) => [i + 1, 30 + i, 40 * i, 12, 1, 2, 3]);
      const truth = [];
      for (const features of rows) {
        const res = await writer.post('/predict', { features });
        expect(res.status).toBe(200);
        truth.push(await json(res));
      }
      const redisClient = new Redis(url);
      clients.push(redisClient);
      const keys = (await redisClient.keys('*')).sort();
      expect(keys.length).toBe(rows.length);
      const good = JSON.parse((await redisClient.get(keys[0]!))!);
      const outputs = Object.keys(good);
      // Every way a stored row can be wrong, one per key.
      const first = outputs[0]!;
      const bad: string[] = [
        JSON.stringify({ ...good, [first]: [...good[first], 0.5] }), // one value too many
        JSON.stringify({ ...good, [first]: good[first].map(String) }), // strings
        JSON.stringify(Object.fromEntries(outputs.slice(1).map((o) => [o, good[o]]))), // an output missing
        JSON.stringify(Object.fromEntries(outputs.map((o) => [o, good[o].map((v: number) => v + 0.5)]))), // fractions where labels are integers
        '42',
        '{not json',
      ];
      for (let i = 0; i < keys.length; i++) await redisClient.set(keys[i]!, bad[i]!);

      for (let i = 0; i < rows.length; i++) {
        const res = await reader.post('/predict', { features: rows[i] });
        expect(res.status).toBe(200);
        const body = await json(res);
        expect(body.cache_tier).toBeNull(); // not taken from Redis: the model ran
        expect(body.prediction).toEqual(truth[i].prediction);
        expect(body.probability).toEqual(truth[i].probability);
      }
    } finally {
      await Promise.all([writer.close(), reader.close()]);
    }
  });
});
