import { afterAll, beforeAll, expect, it } from 'vitest';
import { rows } from './reference.js';
import { json, startTestServer } from './server.js';

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  // Rows wait up to 500 ms for company, and at most 50 may wait: a burst of requests overflows the queue
  // deterministically, whatever the machine's speed.
  server = await startTestServer({
    BATCH_MAX_QUEUED_ROWS: '50',
    BATCH_MAX_ROWS: '1000',
    BATCH_MAX_DELAY_MS: '500',
  });
});
afterAll(() => server.close());

it('refuses a request with more rows than the queue holds', async () => {
  const res = await server.post('/predict/batch', { instances: rows(51, 7) });
  expect(res.status).toBe(503);
  expect(res.headers.get('retry-after')).toBe('1');
  expect((await json(res)).error.code).toBe('ERR_QUEUE_FULL');
});

it('accepts exactly as many queued rows as the bound, refuses the rest with 503, then recovers', async () => {
  const results = await Promise.all(
    rows(120, 7, 4).map((row) =>
      server
        .post('/predict', { features: row.map(Math.abs) })
        .then(async (r) => ({ status: r.status, body: await json(r) })),
    ),
  );
  expect(results.filter((r) => r.status === 200)).toHaveLength(50);
  const refused = results.filter((r) => r.status === 503);
  expect(refused).toHaveLength(70);
  for (const r of refused) expect(r.body.error.code).toBe('ERR_QUEUE_FULL');
  expect((await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7] })).status).toBe(200);
});
