import { afterAll, beforeAll, expect, it } from 'vitest';
import { rows } from './reference.js';
import { json, startTestServer } from './server.js';

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  // A small queue, one batch at a time, on the largest model: 200-row requests take milliseconds each, so
  // twenty sent at once overflow the queue.
  server = await startTestServer({
    BATCH_MAX_QUEUED_ROWS: '300',
    BATCH_MAX_ROWS: '200',
    BATCH_MAX_IN_FLIGHT: '1',
    POOL_SIZE: '1',
  });
});
afterAll(() => server.close());

it('answers 503 ERR_QUEUE_FULL with Retry-After when the queue is full, and recovers', async () => {
  const oversized = await server.post('/predict/batch', { model: 'mlp-large', instances: rows(301, 64) });
  expect(oversized.status).toBe(503);
  expect(oversized.headers.get('retry-after')).toBe('1');
  expect((await json(oversized)).error.code).toBe('ERR_QUEUE_FULL');

  const results = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      server
        .post('/predict/batch', { model: 'mlp-large', instances: rows(200, 64, i + 1) })
        .then(async (r) => ({ status: r.status, body: await json(r) })),
    ),
  );
  const statuses = results.map((r) => r.status);
  expect([...new Set(statuses)].sort()).toEqual([200, 503]);
  for (const r of results.filter((r) => r.status === 503)) expect(r.body.error.code).toBe('ERR_QUEUE_FULL');
  for (const r of results.filter((r) => r.status === 200)) expect(r.body.predictions).toHaveLength(200);
  // Once the queue drains, the same request is served.
  expect((await server.post('/predict/batch', { model: 'mlp-large', instances: rows(200, 64) })).status).toBe(
    200,
  );
});
