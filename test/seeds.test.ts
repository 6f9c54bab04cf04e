/**
 * Every request the five seed READMEs (../shared/seeds/) document, sent unchanged — the bodies below are
 * copied byte for byte from the README lines named beside them — with no `model` named, reading the fields
 * that seed's client reads. Where the README shows a Python client, that client itself runs (only its URL
 * changed to the test server's).
 */
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { argmax, referenceModel } from './reference.js';
import { json, startTestServer } from './server.js';

const run = promisify(execFile);

let server: Awaited<ReturnType<typeof startTestServer>>;
let seed003: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  server = await startTestServer();
  // Seed 003's clients read `probability` as the list of class probabilities: the documented setting.
  seed003 = await startTestServer({ PREDICT_PROBABILITY: 'list' });
});
afterAll(async () => {
  await server?.close();
  await seed003?.close();
});

/** POST a body exactly as a curl -d sends it: the README's text, unparsed. */
const curl = (base: string, path: string, body: string) =>
  fetch(base + path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });

/** Run a seed's Python client against the test server; its stdout. */
async function python(code: string, base: string): Promise<string> {
  const { stdout } = await run(
    'python3',
    ['-c', code.replaceAll('http://localhost:8000', base).replaceAll('http://localhost:8080', base)],
    {
      timeout: 30_000,
    },
  );
  return stdout;
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/;

describe('seed 000: churn, named features (FastAPI + Redis + Postgres)', () => {
  const churn = referenceModel('churn', '2');

  // 000_ca46415934c2af44.txt lines 201-212 (API reference request)
  const apiReference = `{
  "features": {
    "tenure_months": 24,
    "monthly_charges": 75.5,
    "total_charges": 1800.0,
    "contract_length": 12,
    "num_products": 2,
    "support_tickets": 1,
    "satisfaction_score": 4.5
  },
  "use_cache": true
}`;
  // lines 317-327 (cURL example body)
  const curlExample = `{
    "features": {
      "tenure_months": 48,
      "monthly_charges": 120.0,
      "total_charges": 5760.0,
      "contract_length": 24,
      "num_products": 4,
      "support_tickets": 2,
      "satisfaction_score": 3.5
    },
    "use_cache": false
  }`;

  it('answers the API reference and cURL bodies in the documented response shape', async () => {
    for (const body of [apiReference, curlExample]) {
      const res = await curl(server.url, '/predict', body);
      expect(res.status).toBe(200);
      const r = await json(res);
      // The fields of the documented response (lines 217-225), with their types.
      expect(r.request_id).toMatch(/^[0-9a-f-]{36}$/);
      expect(Number.isInteger(r.prediction)).toBe(true);
      expect(typeof r.probability).toBe('number');
      expect(typeof r.model_version).toBe('string');
      expect(typeof r.latency_ms).toBe('number');
      expect(typeof r.cached).toBe('boolean');
      expect(r.timestamp).toMatch(ISO);
      const features = JSON.parse(body).features as Record<string, number>;
      const want = churn.proba(churn.features.map((f) => features[f]!));
      expect(r.model).toBe('churn');
      expect(r.probability).toBeCloseTo(want[1]!, 5);
      expect(r.prediction).toBe(argmax(want));
    }
  });

  it("runs the README's Python client (lines 287-310): probability formats as a percentage", async () => {
    const out = await python(
      `import requests

# Make a prediction
url = "http://localhost:8000/predict"
data = {
    "features": {
        "tenure_months": 36,
        "monthly_charges": 89.99,
        "total_charges": 3240.0,
        "contract_length": 24,
        "num_products": 3,
        "support_tickets": 0,
        "satisfaction_score": 4.8
    },
    "use_cache": True
}

response = requests.post(url, json=data)
result = response.json()

print(f"Prediction: {result['prediction']}")
print(f"Probability: {result['probability']:.2%}")
print(f"Latency: {result['latency_ms']:.2f}ms")
`,
      server.url,
    );
    const want = churn.proba([36, 89.99, 3240, 24, 3, 0, 4.8]);
    expect(out).toContain(`Prediction: ${argmax(want)}`);
    expect(out).toContain(`Probability: ${(want[1]! * 100).toFixed(2)}%`);
    expect(out).toMatch(/Latency: \d+\.\d\dms/);
  });

  it('takes the Locust body without use_cache (lines 422-432)', async () => {
    const res = await server.post('/predict', {
      features: {
        tenure_months: 24,
        monthly_charges: 75.5,
        total_charges: 1800.0,
        contract_length: 12,
        num_products: 2,
        support_tickets: 1,
        satisfaction_score: 4.5,
      },
    });
    expect(res.status).toBe(200);
  });

  it('answers GET /, /health and /model/info in the documented shapes (lines 189-193, 233-239, 258-268)', async () => {
    const root = await json(await server.get('/'));
    expect(typeof root.name).toBe('string');
    expect(typeof root.version).toBe('string');
    expect(root.endpoints).toBeDefined();
    const health = await json(await server.get('/health'));
    expect(health.status).toBe('healthy');
    expect(typeof health.model_version).toBe('string');
    expect(typeof health.database_connected).toBe('boolean');
    expect(typeof health.redis_connected).toBe('boolean');
    expect(health.timestamp).toMatch(ISO);
    const info = await json(await server.get('/model/info'));
    expect(typeof info.version).toBe('string');
    expect(info.feature_names).toEqual(churn.features);
    expect(info.feature_count).toBe(7);
    // drift_metrics: the rolling mean, spread and count of the predictions (drift window), once rows ran.
    await server.post('/predict', { features: [24, 70.5, 1692, 12, 2, 1, 3.5], use_cache: false });
    const after = await json(await server.get('/model/info'));
    expect(after.drift_metrics.count).toBeGreaterThan(info.drift_metrics?.count ?? 0);
    expect(typeof after.drift_metrics.mean).toBe('number');
    expect(typeof after.drift_metrics.std).toBe('number');
    const metrics = await server.get('/metrics');
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
  });
});

describe('seed 001: iris-shaped rows as a list of lists (MLflow + Jaeger)', () => {
  const iris = referenceModel('iris', '1');

  it("runs the README's Python client (lines 149-161): predictions, one per row", async () => {
    const out = await python(
      `import requests
payload = {
    "features": [
        [5.1, 3.5, 1.4, 0.2],
        [6.2, 2.9, 4.3, 1.3]
    ]
}

response = requests.post("http://localhost:8000/predict", json=payload)
result = response.json()
print(f"Predictions: {result['predictions']}")
import json; print(json.dumps(result))
`,
      server.url,
    );
    expect(out).toMatch(/^Predictions: \[/);
    const result = JSON.parse(out.trim().split('\n').at(-1)!);
    expect(result.model).toBe('iris');
    expect(result.predictions.map((p: { prediction: number }) => p.prediction)).toEqual([
      argmax(iris.proba([5.1, 3.5, 1.4, 0.2])),
      argmax(iris.proba([6.2, 2.9, 4.3, 1.3])),
    ]);
  });

  it('answers GET /metrics/summary (lines 50, 253-258): prediction count, training count, average times', async () => {
    expect((await curl(server.url, '/predict', '{"features": [[5.1, 3.5, 1.4, 0.2]]}')).status).toBe(200);
    const res = await server.get('/metrics/summary');
    expect(res.status).toBe(200);
    const summary = await json(res);
    expect(summary.prediction_count).toBeGreaterThan(0);
    expect(summary.training_count).toBe(0);
    expect(summary.average_prediction_time_ms).toBeGreaterThan(0);
  });

  it('answers the API documentation body (lines 245-250)', async () => {
    const res = await curl(
      server.url,
      '/predict',
      `{
  "features": [[5.1, 3.5, 1.4, 0.2]]
}`,
    );
    expect(res.status).toBe(200);
    const r = await json(res);
    expect(r.model).toBe('iris');
    expect(r.predictions).toHaveLength(1);
    expect(r.predictions[0].label).toBe('setosa');
  });
});

describe('seed 002: generic feature_0..feature_9 (Kubernetes, drift)', () => {
  const clf = referenceModel('classifier-10', '1');
  const row = (f: Record<string, number>) => clf.features.map((n) => f[n]!);

  // 002_4cfda6008db834f3.txt lines 129-140
  const single = `{
    "features": {
      "feature_0": 1.5,
      "feature_1": 2.3,
      "feature_2": -0.8,
      "feature_3": 0.1,
      "feature_4": -1.2,
      "feature_5": 0.7,
      "feature_6": 1.8,
      "feature_7": -0.3,
      "feature_8": 2.1,
      "feature_9": 0.9
    }
  }`;
  // lines 147-164
  const batch = `{
    "requests": [
      {
        "features": {
          "feature_0": 1.5, "feature_1": 2.3, "feature_2": -0.8,
          "feature_3": 0.1, "feature_4": -1.2, "feature_5": 0.7,
          "feature_6": 1.8, "feature_7": -0.3, "feature_8": 2.1,
          "feature_9": 0.9
        }
      },
      {
        "features": {
          "feature_0": -1.5, "feature_1": -2.3, "feature_2": 0.8,
          "feature_3": -0.1, "feature_4": 1.2, "feature_5": -0.7,
          "feature_6": -1.8, "feature_7": 0.3, "feature_8": -2.1,
          "feature_9": -0.9
        }
      }
    ]
  }`;

  it('routes the cURL /predict body to the model with those feature names', async () => {
    const res = await curl(server.url, '/predict', single);
    expect(res.status).toBe(200);
    const r = await json(res);
    expect(r.model).toBe('classifier-10');
    expect(r.probability).toBeCloseTo(clf.proba(row(JSON.parse(single).features))[1]!, 5);
  });

  it('answers the /predict/batch body in order', async () => {
    const res = await curl(server.url, '/predict/batch', batch);
    expect(res.status).toBe(200);
    const r = await json(res);
    expect(r.model).toBe('classifier-10');
    const sent = JSON.parse(batch).requests.map((q: { features: Record<string, number> }) => row(q.features));
    expect(r.predictions.map((p: { prediction: number }) => p.prediction)).toEqual(
      sent.map((x: number[]) => argmax(clf.proba(x))),
    );
  });

  it("runs the README's Python clients (lines 336-340 and 359-363): integers, .get('prediction'), status", async () => {
    const out = await python(
      `import requests
for i in range(3):
    response = requests.post('http://localhost:8080/predict', json={
        'features': {f'feature_{j}': 999 if j < 5 else 0 for j in range(10)}
    })
    print(f'Prediction {i}: {response.json().get("prediction", "Error")}')
for i in range(3):
            response = requests.post('http://localhost:8080/predict', 
                json={'features': {f'feature_{j}': j*0.1 for j in range(10)}},
                timeout=5
            )
            print(f'Request {i}: {response.status_code}')
`,
      server.url,
    );
    const big = argmax(clf.proba([999, 999, 999, 999, 999, 0, 0, 0, 0, 0]));
    expect(out).toContain(`Prediction 0: ${big}`);
    expect(out).not.toContain('Error');
    expect(out).toContain('Request 2: 200');
  });

  it('answers GET /model-info and /health', async () => {
    expect((await server.get('/model-info')).status).toBe(200);
    expect((await server.get('/health')).status).toBe(200);
  });

  it('answers `curl http://localhost:8080/stats` (lines 169, 246, 344): requests, predictions and drift per model', async () => {
    expect((await curl(server.url, '/predict', single)).status).toBe(200);
    const res = await server.get('/stats');
    expect(res.status).toBe(200);
    const stats = await json(res);
    expect(stats.status).toBe('healthy');
    expect(stats.total_requests).toBeGreaterThan(0);
    expect(typeof stats.drift_detected).toBe('boolean');
    const clf10 = stats.models.find((m: { name: string }) => m.name === 'classifier-10');
    expect(clf10.requests).toBeGreaterThan(0);
    expect(clf10.drift.status).toMatch(/^(collecting|ok|drift)$/);
  });
});

describe('seed 003: 20 unnamed numbers, probability as a list (MLflow registry)', () => {
  const fraud = referenceModel('fraud', '1');
  // 003_60f54e419d5f1501.txt lines 93-99 and 206-207
  const quickStart = `{
    "features": [
      1.5, -0.3, 2.1, 0.8, -1.2,
      0.5, 1.8, -0.7, 2.3, 0.2,
      -1.5, 1.1, 0.9, -0.4, 2.0,
      0.7, -1.8, 1.3, 0.6, -0.9
    ]
  }`;
  const apiDoc = `{
    "features": [1.5, -0.3, 2.1, 0.8, -1.2, 0.5, 1.8, -0.7, 2.3, 0.2, -1.5, 1.1, 0.9, -0.4, 2.0, 0.7, -1.8, 1.3, 0.6, -0.9]
  }`;

  it('answers in the documented shape (lines 213-218): probability as [p0, p1]', async () => {
    for (const body of [quickStart, apiDoc]) {
      const res = await curl(seed003.url, '/predict', body);
      expect(res.status).toBe(200);
      const r = await json(res);
      expect(r.model).toBe('fraud');
      const want = fraud.proba(JSON.parse(body).features);
      expect(Number.isInteger(r.prediction)).toBe(true);
      expect(r.prediction).toBe(argmax(want));
      expect(r.probability).toHaveLength(2);
      expect(r.probability[0]).toBeCloseTo(want[0]!, 5);
      expect(r.probability[1]).toBeCloseTo(want[1]!, 5);
      expect(typeof r.model_version).toBe('string');
      expect(r.timestamp).toMatch(ISO);
    }
  });

  it('answers the same body with a single probability under the default setting', async () => {
    const r = await json(await curl(server.url, '/predict', apiDoc));
    expect(typeof r.probability).toBe('number');
  });

  it('answers GET /, /health, /metrics and /model-info (lines 192-198)', async () => {
    for (const path of ['/', '/health', '/metrics', '/model-info']) {
      expect((await seed003.get(path)).status, path).toBe(200);
    }
  });
});

describe('PREDICT_PROBABILITY=list with labels that look like numbers', () => {
  it('lists probabilities in class order, whatever the labels; repeated labels are refused at load', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'models-'));
    cpSync(join(import.meta.dirname, '..', 'models', 'iris'), join(dir, 'iris'), { recursive: true });
    const metaPath = join(dir, 'iris', '1', 'model.json');
    const meta = JSON.parse(readFileSync(metaPath, 'utf8'));
    writeFileSync(metaPath, JSON.stringify({ ...meta, class_labels: ['2', '1', '0'] }));
    const s = await startTestServer({ MODELS_DIR: dir, PREDICT_PROBABILITY: 'list', POOL_SIZE: '1' });
    try {
      const iris = referenceModel('iris', '1');
      const r = await json(await s.post('/predict', { features: [5.1, 3.5, 1.4, 0.2] }));
      const want = iris.proba([5.1, 3.5, 1.4, 0.2]);
      expect(r.prediction).toBe(argmax(want));
      expect(r.label).toBe('2');
      want.forEach((p, k) => {
        expect(r.probability[k]).toBeCloseTo(p, 5);
      });
      expect(r.probability[r.prediction]).toBe(Math.max(...r.probability));
    } finally {
      await s.close();
    }
    writeFileSync(metaPath, JSON.stringify({ ...meta, class_labels: ['x', 'y', 'x'] }));
    await expect(startTestServer({ MODELS_DIR: dir, POOL_SIZE: '1' })).rejects.toThrow(
      /repeats a class label/,
    );
  });
});

describe('seed 004: fraud, 20 numbers and a request id (Kubernetes)', () => {
  // 004_006638603cc116af.txt lines 106-109
  const withId = `{
    "features": [0.5, 0.3, 0.8, 0.2, 0.9, 0.1, 0.7, 0.4, 0.6, 0.5,
                 0.3, 0.8, 0.2, 0.9, 0.1, 0.7, 0.4, 0.6, 0.5, 0.3],
    "request_id": "test_001"
  }`;

  it('answers the cURL body and echoes its request id', async () => {
    const res = await curl(server.url, '/predict', withId);
    expect(res.status).toBe(200);
    const r = await json(res);
    expect(r.model).toBe('fraud');
    expect(r.request_id).toBe('test_001');
  });

  it('answers the Locust body (lines 252-254)', async () => {
    const res = await server.post('/predict', { features: Array(20).fill(0.5) });
    expect(res.status).toBe(200);
    expect((await json(res)).model).toBe('fraud');
  });

  it("answers the load generator's bodiless GET /predict (lines 172-173) with 405 and Allow: POST", async () => {
    const res = await server.get('/predict');
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
    expect((await json(res)).error.code).toBe('ERR_METHOD_NOT_ALLOWED');
  });
});

describe('choosing the model when none is named', () => {
  it('refuses features that fit several models, naming the candidates', async () => {
    // Two copies of iris beside churn (the default): a row of four numbers fits both copies.
    const dir = mkdtempSync(join(tmpdir(), 'models-'));
    const models = join(import.meta.dirname, '..', 'models');
    cpSync(join(models, 'iris'), join(dir, 'iris'), { recursive: true });
    cpSync(join(models, 'iris'), join(dir, 'iris-copy'), { recursive: true });
    cpSync(join(models, 'churn'), join(dir, 'churn'), { recursive: true });
    const s = await startTestServer({ MODELS_DIR: dir, DEFAULT_MODEL: 'churn', POOL_SIZE: '1' });
    try {
      const res = await s.post('/predict', { features: [5.1, 3.5, 1.4, 0.2] });
      expect(res.status).toBe(422);
      const { error } = await json(res);
      expect(error.code).toBe('ERR_MODEL_AMBIGUOUS');
      expect(error.field).toBe('model');
      expect(error.candidates).toEqual(['iris', 'iris-copy']);
      // Naming one settles it; the default model still answers the rows it fits.
      expect((await s.post('/predict', { model: 'iris-copy', features: [5.1, 3.5, 1.4, 0.2] })).status).toBe(
        200,
      );
      expect((await json(await s.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7] }))).model).toBe('churn');
      // Rows no model fits get the default model's own error, naming the field.
      const miss = await json(await s.post('/predict', { features: [1, 2, 3] }));
      expect(miss.error).toMatchObject({ code: 'ERR_INPUT_SHAPE', field: 'features' });
    } finally {
      await s.close();
    }
  });
});
