/** Redis dies under load and comes back: requests never fail, and the shared tier rejoins by itself. */
import type { ChildProcess } from 'node:child_process';
import { afterAll, expect, it } from 'vitest';
import { json, startTestServer } from './server.js';
import { startRedisServer } from './services.js';

const port = 16400 + Math.floor(Math.random() * 500);
let redis: ChildProcess | undefined;
type Server = Awaited<ReturnType<typeof startTestServer>>;
const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  redis?.kill('SIGKILL');
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it('keeps answering when Redis is killed mid-load, and uses it again once it is back', async () => {
  redis = await startRedisServer(port);
  const env = { REDIS_URL: `redis://127.0.0.1:${port}/0`, REDIS_TIMEOUT_MS: '25', REDIS_PROBE_MS: '200' };
  const [a, b] = await Promise.all([startTestServer(env), startTestServer(env)]);
  servers.push(a, b);
  expect((await json(await a.get('/health'))).redis_connected).toBe(true);

  let stop = false;
  let ok = 0;
  const failures: string[] = [];
  let n = 0;
  const loop = async (s: Server) => {
    while (!stop) {
      n++;
      const res = await s
        .post('/predict', { features: [n % 72, 20 + (n % 97), n, 12, 1 + (n % 5), n % 4, 1 + (n % 4)] })
        .catch((e) => e as Error);
      if (res instanceof Error) failures.push(res.message);
      else if (res.status !== 200) failures.push(`${res.status} ${await res.text()}`);
      else ok++;
    }
  };
  const load = Promise.all(Array.from({ length: 24 }, (_, i) => loop(i % 2 ? a : b)));

  await sleep(800);
  const beforeKill = ok;
  redis.kill('SIGKILL');
  await expect
    .poll(async () => (await json(await a.get('/health'))).redis_connected, { timeout: 5000 })
    .toBe(false);
  await sleep(1000);
  stop = true;
  await load;
  expect(failures).toEqual([]);
  expect(beforeKill).toBeGreaterThan(50);
  expect(ok - beforeKill).toBeGreaterThan(50); // it kept serving while Redis was gone

  redis = await startRedisServer(port);
  await expect
    .poll(async () => (await json(await a.get('/health'))).redis_connected, {
      timeout: 10_000,
      interval: 200,
    })
    .toBe(true);
  await expect
    .poll(async () => (await json(await b.get('/health'))).redis_connected, {
      timeout: 10_000,
      interval: 200,
    })
    .toBe(true);
  const features = [7, 7, 7, 7, 7, 7, 7];
  expect((await json(await a.post('/predict', { features }))).cache_tier).toBeNull();
  await expect
    .poll(
      async () => (await json(await b.post('/predict', { features: [7, 7, 7, 7, 7, 7, 7] }))).cache_tier,
      { timeout: 3000 },
    )
    .toBe('l2');
});
