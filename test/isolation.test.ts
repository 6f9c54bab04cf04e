/**
 * No request can hurt another: malformed tensors sent beside valid requests, in the same batching window,
 * get their own 4xx while every valid request is answered with its own correct values.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SEED_FEATURES } from './cases/bad-input.js';
import { referenceModel } from './reference.js';
import { json, startTestServer } from './server.js';

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  // Rows wait 5 ms for company: the malformed and the valid requests of a round share batching windows.
  server = await startTestServer({ BATCH_MAX_DELAY_MS: '5' });
});
afterAll(() => server?.close());

const v2 = (input: Record<string, unknown>) =>
  server.post('/v2/models/churn/versions/2/infer', {
    inputs: [{ name: 'float_input', datatype: 'FP32', ...input }],
    parameters: { use_cache: false },
  });

const MALFORMED: Record<string, unknown>[] = [
  { shape: [0, 7], data: [] },
  { shape: [1, 0], data: [] },
  { shape: [2, 0], data: [] },
  { shape: [0, 0], data: [] },
  { shape: [2, 7], data: Array(7).fill(1) },
  { shape: [1, 6], data: Array(6).fill(1) },
  { shape: [1, 7, 1], data: Array(7).fill(1) },
  { shape: [1, 7], data: [[[1, 2, 3, 4, 5, 6, 7]]] },
  { shape: [1, 7], data: [1, 2, 3, 4, 5, 6, 'x'] },
  { shape: [1, 7], data: [1, 2, 3, 4, 5, 6, null] },
  { shape: [-1, 7], data: Array(7).fill(1) },
  { shape: [1.5, 7], data: Array(7).fill(1) },
];

it('in 20 rounds of 8 valid requests beside every malformed tensor, no valid request fails', async () => {
  const churn = referenceModel('churn', '2');
  let valid = 0;
  for (let round = 0; round < 20; round++) {
    const rows = Array.from({ length: 8 }, (_, i) =>
      Object.values(SEED_FEATURES).map((v, j) => v + round + i * j),
    );
    const [good, bad] = await Promise.all([
      Promise.all(rows.map((row) => server.post('/predict', { features: row, use_cache: false }))),
      Promise.all(MALFORMED.map(v2)),
    ]);
    for (const [i, res] of good.entries()) {
      expect(res.status, `round ${round} request ${i}`).toBe(200);
      expect((await json(res)).probability).toBeCloseTo(churn.proba(rows[i]!)[1]!, 5);
      valid++;
    }
    for (const [k, res] of bad.entries()) {
      expect(res.status, JSON.stringify(MALFORMED[k])).toBeGreaterThanOrEqual(400);
      expect(res.status, JSON.stringify(MALFORMED[k])).toBeLessThan(500);
      expect(typeof (await json(res)).error).toBe('string');
    }
  }
  expect(valid).toBe(160);
});
