import { describe, expect, it } from 'vitest';
import { createApp } from './app.js';
import { noopMetrics } from './metrics.js';
import { createRegistry } from './registry.js';

describe('createApp before the models are ready', () => {
  let ready = false;
  const app = createApp(
    {
      registry: createRegistry([]),
      predictor: {
        infer: () => Promise.reject(new Error('must not run')),
        queuedRows: () => 0,
        settled: () => Promise.resolve(),
      },
      metrics: noopMetrics,
      isReady: () => ready,
    },
    { maxBodyBytes: 1024 * 1024, maxRowsPerRequest: 100, serverVersion: 'test' },
  );
  const post = (path: string, body: unknown) =>
    app.request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  it('answers every prediction route 503 ERR_NOT_READY with Retry-After, not a validation error', async () => {
    for (const [path, body] of [
      ['/predict', { features: [1, 2, 3] }],
      ['/predict/batch', { instances: [[1, 2, 3]] }],
      ['/v2/models/churn/infer', { inputs: [{ name: 'x', shape: [1], datatype: 'FP32', data: [1] }] }],
    ] as const) {
      const res = await post(path, body);
      expect(res.status, path).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      const json = (await res.json()) as { error: unknown };
      if (path.startsWith('/v2')) expect(json.error).toMatch(/still loading/);
      else expect(json.error).toMatchObject({ code: 'ERR_NOT_READY' });
    }
    expect((await app.request('/health/ready')).status).toBe(503);
    expect((await app.request('/health/live')).status).toBe(200);
    // Metadata routes say "loading", not "unknown model" or "name a model".
    for (const path of ['/model/info', '/models/churn', '/v2/models/iris', '/v2/models/iris/ready']) {
      const res = await app.request(path);
      expect(res.status, path).toBe(503);
      expect(res.headers.get('retry-after'), path).toBe('1');
    }
  });

  it('once ready, the same request reaches the registry (and its own errors)', async () => {
    ready = true;
    const res = await post('/predict', { features: [1, 2, 3] });
    expect(res.status).toBe(422);
    expect(((await res.json()) as { error: { field: string } }).error.field).toBe('model');
  });
});
