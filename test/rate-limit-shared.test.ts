/**
 * Rate limits shared through Redis: two replicas enforce one limit; when Redis dies or stops answering,
 * each replica keeps enforcing the limit in process (never refusing everything, never opening everything),
 * and shares again once Redis is back.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { generateKey, keyDigestHex, keyLine } from '../src/core/access.js';
import { createLocalCounter, createRateLimiter } from '../src/node/rate-limiter.js';
import { startTestServer } from './server.js';
import { freshRedisDb, startRedisServer } from './services.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;
const servers: Server[] = [];
let redis: ChildProcess | undefined;
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  redis?.kill('SIGKILL');
});

const KEY = generateKey();
// Keys for the phases of the failure test: a key refused in a window stays refused by each replica, without
// asking Redis, until that window ends; each phase uses a key of its own.
const HELD = generateKey();
const DOWN = generateKey();
const OTHER = generateKey();
const API_KEYS = [
  keyLine('tenant', ['predict'], keyDigestHex(KEY)),
  keyLine('held', ['predict'], keyDigestHex(HELD)),
  keyLine('down', ['predict'], keyDigestHex(DOWN)),
  keyLine('other', ['predict'], keyDigestHex(OTHER)),
].join('\n');
const ROW = { features: [12, 70.5, 846, 12, 2, 1, 3.5] };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function predict(s: Server, key = KEY) {
  const started = performance.now();
  const res = await s.post('/predict', ROW, { 'x-api-key': key });
  await res.arrayBuffer();
  return { status: res.status, ms: performance.now() - started };
}

const sharedGauge = async (s: Server) =>
  Number(/^onnxserve_rate_limit_shared (\d)$/m.exec(await (await s.get('/metrics')).text())?.[1]);

describe('counted in process', () => {
  it('answers at once; a window opens with its first request and ends on time; ended windows are swept', () => {
    let now = 1_000_000;
    const counter = createLocalCounter(() => now);
    const policy = { points: 3, windowSeconds: 10 };
    const seen = Array.from({ length: 5 }, () => counter.consume('k:a', policy));
    expect(seen.map((d) => [d.allowed, d.remaining])).toEqual([
      [true, 2],
      [true, 1],
      [true, 0],
      [false, 0],
      [false, 0],
    ]);
    now += 9_001; // 0.999 s of the window left: a refused caller is told to wait one second
    const late = counter.consume('k:a', policy);
    expect([late.allowed, late.resetSeconds]).toEqual([false, 1]);
    now += 999; // the window has ended: a new one opens with this request
    expect(counter.consume('k:a', policy)).toEqual({ allowed: true, remaining: 2, resetSeconds: 10 });
    // Another limit for the same subject counts apart (a key with a rate of its own).
    expect(counter.consume('k:a', { points: 100, windowSeconds: 10 }).remaining).toBe(99);
    // 5,000 one-off callers, then their windows end: the next new caller's arrival sweeps them.
    for (let i = 0; i < 5_000; i++) counter.consume(`a:10.0.${i >> 8}.${i & 255}`, policy);
    expect(counter.size()).toBeGreaterThanOrEqual(5_000);
    now += 10_000;
    for (let i = 0; i < 5_000; i++) counter.consume(`a:10.1.${i >> 8}.${i & 255}`, policy);
    expect(counter.size()).toBeLessThan(8_000);
  });
});

describe('requests of one turn, counted together', () => {
  it('gives exactly the limit, in arrival order, with the right remaining counts (in process and in Redis)', async () => {
    const url = await freshRedisDb(15);
    for (const limiter of [
      createRateLimiter(),
      createRateLimiter({ redis: { url, timeoutMs: 500, breakAfter: 3, probeMs: 200 } }),
    ]) {
      try {
        await sleep(200); // connected
        const policy = { points: 4, windowSeconds: 60 };
        const first = await Promise.all(Array.from({ length: 10 }, () => limiter.consume('k:turn', policy)));
        expect(first.map((d) => d.allowed)).toEqual([
          true,
          true,
          true,
          true,
          false,
          false,
          false,
          false,
          false,
          false,
        ]);
        expect(first.slice(0, 4).map((d) => d.remaining)).toEqual([3, 2, 1, 0]);
        expect(first.every((d) => d.resetSeconds > 55 && d.resetSeconds <= 60)).toBe(true);
        // The next turn: still over (refused in memory, without a count).
        expect((await limiter.consume('k:turn', policy)).allowed).toBe(false);
        // Another subject and another policy in the same turn are counted apart.
        const [x, y] = await Promise.all([
          limiter.consume('k:other', policy),
          limiter.consume('k:turn', { points: 100, windowSeconds: 60 }),
        ]);
        expect([x.allowed, x.remaining, y.allowed, y.remaining]).toEqual([true, 3, true, 99]);
        expect(limiter.fallbacks()).toBe(0);
      } finally {
        limiter.close();
      }
    }
  });
});

describe('two replicas sharing Redis', () => {
  it('enforce one limit: over 10 s at twice the limit, accepted requests within ±5 % of the rate', async () => {
    const url = await freshRedisDb(14);
    const env = { REDIS_URL: url, API_KEYS, AUTH_PREDICTIONS: 'keyed', RATE_LIMIT_PER_KEY: '50' };
    const [a, b] = await Promise.all([startTestServer(env), startTestServer(env)]);
    servers.push(a, b);
    expect(await sharedGauge(a)).toBe(1);

    // 100 requests a second (twice the limit of 50 a second), alternating between the replicas, for 10 s:
    // request i leaves at i × 10 ms, whether or not earlier ones have been answered.
    const seconds = 10;
    const rate = 100;
    const t0 = performance.now();
    const pending: Promise<{ status: number; ms: number; replica: number }>[] = [];
    for (let i = 0; i < seconds * rate; i++) {
      const wait = t0 + (i * 1000) / rate - performance.now();
      if (wait > 0) await sleep(wait);
      const replica = i % 2;
      pending.push(predict(replica ? b : a).then((r) => ({ ...r, replica })));
    }
    const results = await Promise.all(pending);
    const elapsed = (performance.now() - t0) / 1000;
    const accepted = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    expect(accepted.length + refused.length).toBe(results.length); // nothing else: no 5xx
    const expected = 50 * seconds;
    console.log(
      `shared limit: ${accepted.length} accepted of ${results.length} sent in ${elapsed.toFixed(2)} s ` +
        `(limit ${expected}); by replica: ${accepted.filter((r) => r.replica === 0).length} + ` +
        `${accepted.filter((r) => r.replica === 1).length}`,
    );
    expect(accepted.length).toBeGreaterThanOrEqual(expected * 0.95);
    expect(accepted.length).toBeLessThanOrEqual(expected * 1.05);
    // Both replicas served their share: neither simply refused everything.
    for (const replica of [0, 1]) {
      expect(accepted.filter((r) => r.replica === replica).length).toBeGreaterThan(expected * 0.3);
    }
  });
});

describe('when Redis fails', () => {
  it('each replica limits in process (no 5xx, no unbounded waits), then shares again once Redis is back', async () => {
    const port = 16900 + Math.floor(Math.random() * 500);
    redis = await startRedisServer(port);
    const env = {
      REDIS_URL: `redis://127.0.0.1:${port}/0`,
      REDIS_TIMEOUT_MS: '25',
      REDIS_PROBE_MS: '200',
      API_KEYS,
      AUTH_PREDICTIONS: 'keyed',
      RATE_LIMIT_PER_KEY: '5',
      RATE_LIMIT_WINDOW_SECONDS: '60',
    };
    const [a, b] = await Promise.all([startTestServer(env), startTestServer(env)]);
    servers.push(a, b);
    // Shared: 5 in the window across both replicas.
    const shared = [];
    for (let i = 0; i < 8; i++) shared.push((await predict(i % 2 ? b : a)).status);
    expect(shared.filter((s) => s === 200)).toHaveLength(5);

    // Redis stops answering (it accepts and holds commands): requests must not wait on it.
    const { Redis } = await import('ioredis');
    const admin = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true });
    await admin.connect();
    void admin.call('DEBUG', 'SLEEP', '2').catch(() => {});
    const held = [];
    for (let i = 0; i < 12; i++) held.push(await predict(i % 2 ? b : a, HELD));
    admin.disconnect();
    expect(held.every((r) => r.status === 200 || r.status === 429)).toBe(true);
    // The first calls wait one timeout (25 ms, plus this machine's scheduling), then the circuit opens.
    expect(Math.max(...held.map((r) => r.ms))).toBeLessThan(1000);
    // Counted in process: each replica allows 5 in its own window; the shared count no longer applies.
    expect(held.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(5);
    expect(held.filter((r) => r.status === 200).length).toBeLessThanOrEqual(10);
    await sleep(2200); // the sleep ends

    // Redis dies.
    redis.kill('SIGKILL');
    await new Promise((r) => redis!.once('exit', r));
    await expect.poll(() => sharedGauge(a), { timeout: 5000 }).toBe(0);
    const down = [];
    for (let i = 0; i < 14; i++) down.push(await predict(i % 2 ? b : a, DOWN));
    expect(down.every((r) => r.status === 200 || r.status === 429)).toBe(true);
    // Still limited, per replica: 5 each of the 7 each was sent.
    expect(down.filter((r) => r.status === 200)).toHaveLength(10);
    expect(Math.max(...down.map((r) => r.ms))).toBeLessThan(1000);

    // Back: a fresh, empty Redis on the same port; the replicas share again.
    redis = await startRedisServer(port);
    await expect.poll(() => sharedGauge(a), { timeout: 8000, interval: 100 }).toBe(1);
    await expect.poll(() => sharedGauge(b), { timeout: 8000, interval: 100 }).toBe(1);
    const back = [];
    for (let i = 0; i < 8; i++) back.push((await predict(i % 2 ? b : a, OTHER)).status);
    expect(back.filter((s) => s === 200)).toHaveLength(5);
  });
});
