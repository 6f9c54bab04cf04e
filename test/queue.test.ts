import { afterAll, beforeAll, expect, it } from 'vitest';
import { rows } from './reference.js';
import { json, startTestServer } from './server.js';

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  // Rows wait up to 1 s for company, and at most 50 may wait: a burst of requests overflows the queue
  // deterministically, whatever the machine's speed (120 requests took over 500 ms to arrive on a loaded
  // CI machine once).
  server = await startTestServer({
    BATCH_MAX_QUEUED_ROWS: '50',
    BATCH_MAX_ROWS: '1000',
    BATCH_MAX_DELAY_MS: '1000',
  });
});
afterAll(() => server.close());

it('refuses a request with more rows than the queue could ever hold with 413, not a retryable 503', async () => {
  // MAX_ROWS_PER_REQUEST defaults to the queue bound when that is under 10,000.
  const res = await server.post('/predict/batch', { instances: rows(51, 7) });
  expect(res.status).toBe(413);
  expect(res.headers.get('retry-after')).toBeNull();
  expect((await json(res)).error).toMatchObject({ code: 'ERR_TOO_MANY_ROWS', field: 'instances' });
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
  expect((await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], use_cache: false })).status).toBe(
    200,
  );
});

it('answers 504 when the deadline a client asks for passes before its rows run', async () => {
  // Rows here wait up to 1 s for company; these clients give up after 50 ms.
  for (const [how, send] of [
    [
      'body timeout_ms',
      () => server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], timeout_ms: 50, use_cache: false }),
    ],
    [
      'X-Timeout-Ms',
      () =>
        server.post(
          '/predict',
          { features: [1, 2, 3, 4, 5, 6, 7], use_cache: false },
          { 'x-timeout-ms': '50' },
        ),
    ],
    [
      'v2 parameters.timeout_ms',
      () =>
        server.post('/v2/models/churn/infer', {
          parameters: { timeout_ms: 50, use_cache: false },
          inputs: [{ name: 'float_input', shape: [1, 7], datatype: 'FP32', data: [1, 2, 3, 4, 5, 6, 7] }],
        }),
    ],
  ] as const) {
    const started = performance.now();
    const res = await send();
    expect(res.status, how).toBe(504);
    const body = await json(res);
    expect(JSON.stringify(body.error), how).toMatch(/ERR_DEADLINE_EXCEEDED|deadline/);
    expect(performance.now() - started, how).toBeLessThan(450);
  }
  // Asked for nothing, the server's 30 s limit applies: the same request waits out the 500 ms and is answered.
  expect((await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], use_cache: false })).status).toBe(
    200,
  );
});
