/**
 * Drift detection, end to end. The shipped churn model carries its training data's reference (written by
 * `npm run models`); rows drawn from the same generative process (training/dataset.ts, other seeds) must
 * stay under the alert threshold window after window, and rows from a shifted process must cross it within
 * one window: in the server's own report, in its Prometheus gauges, and in the alert rules' expressions as a
 * real Prometheus evaluates them. A foreign model (no reference) captures one from its first rows, or is given
 * one through the admin API.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { createDriftMonitor, createPredictor, describeModel } from '../src/core/index.js';
import { createOrtBackend } from '../src/node/ort-backend.js';
import { churnDataset } from '../training/dataset.js';
import { startPrometheus } from './prometheus.js';
import { MODELS_DIR } from './reference.js';
import { json, startTestServer } from './server.js';

const ROOT = join(import.meta.dirname, '..');
const WINDOW = 1000;
const THRESHOLD = 0.2;

/** Rows from the process the churn model was trained on (its reference), with a seed of their own. */
const referenceRows = (n: number, seed: number) => churnDataset(n, seed).x;

/** The same process with two features moved: higher monthly charges, lower satisfaction. */
const shiftedRows = (n: number, seed: number) =>
  churnDataset(n, seed).x.map((r) => {
    const row = [...r];
    row[1] = row[1]! + 40; // monthly_charges: 20–120 → 60–160
    row[6] = 1 + (row[6]! - 1) / 2; // satisfaction_score: 1–5 → 1–3
    return row;
  });

const FEATURES = [
  'tenure_months',
  'monthly_charges',
  'total_charges',
  'contract_length',
  'num_products',
  'support_tickets',
  'satisfaction_score',
];

describe('drift statistics over repeated windows (the model run in process, no server)', () => {
  it('rows from the reference raise no alarm in 200 windows; shifted rows raise one in every window', async () => {
    const backend = createOrtBackend();
    const path = join(MODELS_DIR, 'churn', '2', 'model.onnx');
    const signatures = await backend.load([{ id: 'churn@2', path }]);
    const entry = describeModel({
      name: 'churn',
      version: '2',
      sha256: 'test',
      signature: signatures.get('churn@2')!,
      metadata: JSON.parse(readFileSync(join(MODELS_DIR, 'churn', '2', 'model.json'), 'utf8')),
    });
    /** One window of rows through a fresh monitor: its report once the window is full. */
    const windowOf = async (rows: number[][]) => {
      const drift = createDriftMonitor({ windowRows: WINDOW, minRows: WINDOW, psiThreshold: THRESHOLD });
      const predictor = createPredictor({ backend, batching: false, drift });
      for (let i = 0; i < rows.length; i += 50) {
        const part = rows.slice(i, i + 50);
        const data = Float32Array.from(part.flat());
        await predictor.infer(
          entry,
          { float_input: { type: 'float32', dims: [part.length, 7], data } },
          part.length,
        );
      }
      return drift.report(entry);
    };
    try {
      const WINDOWS = 200;
      let alarms = 0;
      let ksSignificant = 0;
      let maxPsi = 0;
      for (let w = 0; w < WINDOWS; w++) {
        const r = await windowOf(referenceRows(WINDOW, 1000 + w));
        expect(r.status === 'ok' || r.status === 'drift').toBe(true);
        expect(r.window.rows).toBe(WINDOW);
        if (r.status === 'drift') alarms++;
        const series = [...r.features, r.prediction!];
        if (series.some((s) => s.ks_p_value < 0.01)) ksSignificant++;
        maxPsi = Math.max(maxPsi, ...series.map((s) => s.psi), r.classes!.psi);
      }
      let detected = 0;
      const SHIFTED = 50;
      for (let w = 0; w < SHIFTED; w++) {
        const r = await windowOf(shiftedRows(WINDOW, 5000 + w));
        if (r.status === 'drift') detected++;
        expect(r.drifted_features).toEqual(['monthly_charges', 'satisfaction_score']);
      }
      console.log(
        `drift: false alarms ${alarms}/${WINDOWS} windows of ${WINDOW} reference rows (largest PSI ${maxPsi.toFixed(3)}, ` +
          `threshold ${THRESHOLD}); windows with some KS p < 0.01: ${ksSignificant}/${WINDOWS}; ` +
          `shifted windows detected ${detected}/${SHIFTED}`,
      );
      expect(alarms).toBe(0);
      expect(maxPsi).toBeLessThan(THRESHOLD / 2);
      expect(ksSignificant / WINDOWS).toBeLessThanOrEqual(0.05);
      expect(detected).toBe(SHIFTED);
    } finally {
      await backend.close();
    }
  }, 120_000);
});

describe('drift over HTTP: the route, the gauges, and the alert rules in a real Prometheus', () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let prom: Awaited<ReturnType<typeof startPrometheus>>;
  beforeAll(async () => {
    server = await startTestServer({
      DRIFT_WINDOW_ROWS: String(WINDOW),
      DRIFT_MIN_ROWS: String(WINDOW),
      CACHE: 'off',
    });
    prom = await startPrometheus(new URL(server.url).host);
  });
  afterAll(async () => {
    prom?.stop();
    await server?.close();
  });

  /** Rows sent as the seed clients send them: /predict/batch, 25 rows a request, 4 requests at once. */
  const send = async (rows: number[][]) => {
    const parts: number[][][] = [];
    for (let i = 0; i < rows.length; i += 25) parts.push(rows.slice(i, i + 25));
    for (let i = 0; i < parts.length; i += 4) {
      await Promise.all(
        parts.slice(i, i + 4).map(async (instances) => {
          const res = await server.post('/predict/batch', { model: 'churn', version: '2', instances });
          expect(res.status).toBe(200);
        }),
      );
    }
  };
  const gauges = async () => {
    const text = await (await server.get('/metrics')).text();
    const psi: Record<string, number> = {};
    for (const m of text.matchAll(
      /^onnxserve_drift_feature_psi\{model="churn",version="2",feature="([^"]+)"\} (\S+)$/gm,
    )) {
      psi[m[1]!] = Number(m[2]);
    }
    const score = /^onnxserve_drift_prediction_psi\{model="churn",version="2",series="score"\} (\S+)$/m.exec(
      text,
    );
    return { psi, score: score ? Number(score[1]) : undefined };
  };
  /** The alert rules' expressions, evaluated now by Prometheus: the series that would fire (after `for`). */
  const firing = async () => {
    const rules = parse(readFileSync(join(ROOT, 'monitoring/alerts.yml'), 'utf8')).groups.flatMap(
      (g: { rules: { alert: string; expr: string }[] }) => g.rules,
    );
    const drift = rules.filter((r: { alert: string }) => r.alert.includes('Drift'));
    expect(drift.length).toBe(2);
    const out: Record<string, string>[] = [];
    for (const r of drift)
      out.push(...(await prom.series(r.expr)).map((s) => ({ alert: r.alert, ...s.metric })));
    return out;
  };
  /** Waits for Prometheus to scrape the gauges as they are now. */
  const scraped = async (check: (psi: Record<string, number>) => boolean) => {
    await expect
      .poll(
        async () => {
          const series = await prom.series('onnxserve_drift_feature_psi{model="churn",version="2"}');
          return check(Object.fromEntries(series.map((s) => [s.metric.feature!, s.value])));
        },
        { timeout: 20_000, interval: 500 },
      )
      .toBe(true);
  };

  it('reports nothing before the window fills, then no drift for reference rows, then drift within one window of shifted rows', async () => {
    // Before: the window is filling; no statistics, no gauges.
    await send(referenceRows(500, 7));
    const early = await json(await server.get('/models/churn/drift?version=2'));
    expect(early).toMatchObject({ status: 'collecting', reference: { source: 'training', rows: 4000 } });
    expect(early.window.rows).toBe(500);
    expect((await gauges()).psi).toEqual({});

    // A window of rows from the reference: every gauge under the threshold, no alert expression holds.
    await send(referenceRows(WINDOW, 8));
    const calm = await json(await server.get('/models/churn/drift?version=2'));
    expect(calm.status).toBe('ok');
    expect(calm.features.map((f: { name: string }) => f.name)).toEqual(FEATURES);
    const before = await gauges();
    expect(Object.keys(before.psi).sort()).toEqual([...FEATURES].sort());
    for (const [feature, value] of Object.entries(before.psi)) expect(value, feature).toBeLessThan(THRESHOLD);
    expect(before.score).toBeLessThan(THRESHOLD);
    await scraped((psi) => Object.keys(psi).length === FEATURES.length);
    expect(await firing()).toEqual([]);

    // One window of shifted rows: the two moved features cross the threshold, the others do not.
    await send(shiftedRows(WINDOW, 9));
    const drifted = await json(await server.get('/models/churn/drift?version=2'));
    expect(drifted.status).toBe('drift');
    expect(drifted.drifted_features).toEqual(['monthly_charges', 'satisfaction_score']);
    const after = await gauges();
    expect(after.psi.monthly_charges).toBeGreaterThan(THRESHOLD);
    expect(after.psi.satisfaction_score).toBeGreaterThan(THRESHOLD);
    for (const f of ['tenure_months', 'contract_length', 'num_products', 'support_tickets']) {
      expect(after.psi[f], f).toBeLessThan(THRESHOLD);
    }
    expect(after.score).toBeGreaterThan(THRESHOLD);
    await scraped((psi) => (psi.monthly_charges ?? 0) > THRESHOLD);
    const alerts = await firing();
    expect(
      alerts
        .filter((a) => a.alert === 'OnnxServeFeatureDrift')
        .map((a) => a.feature)
        .sort(),
    ).toEqual(['monthly_charges', 'satisfaction_score']);
    expect(alerts.filter((a) => a.alert === 'OnnxServePredictionDrift').length).toBeGreaterThan(0);

    // The seeds' views of the same window.
    const info = await json(await server.get('/model/info?model=churn&version=2'));
    expect(info.drift_metrics).toMatchObject({ count: drifted.window.rows, drift_detected: true });
    expect(info.drift_metrics.mean).toBeCloseTo(drifted.prediction.mean, 5);
    const stats = await json(await server.get('/stats'));
    expect(stats.drift_detected).toBe(true);
    const churn2 = stats.models.find(
      (m: { name: string; version: string }) => m.name === 'churn' && m.version === '2',
    );
    expect(churn2.rows_computed).toBe(500 + 2 * WINDOW);
    expect(churn2.drift.drifted_features).toEqual(['monthly_charges', 'satisfaction_score']);
    const summary = await json(await server.get('/metrics/summary'));
    expect(summary.prediction_count).toBe(stats.total_requests);
    expect(summary.prediction_rows).toBe(500 + 2 * WINDOW);
    expect(summary.training_count).toBe(0);
  }, 120_000);
});

describe('a foreign model: a reference captured from its first rows, or uploaded', () => {
  let dir: string;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  const sk = JSON.parse(
    readFileSync(join(import.meta.dirname, 'fixtures', 'sklearn', 'sk-binary.expected.json'), 'utf8'),
  ) as { inputs: number[][] };
  const width = sk.inputs[0]!.length;
  /** Rows like the fixture's, jittered. */
  const rows = (n: number, shift = 0) =>
    Array.from({ length: n }, (_, i) =>
      sk.inputs[i % sk.inputs.length]!.map((v, k) => v + shift + ((i * 7 + k * 3) % 11) / 50),
    );
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'models-'));
    cpSync(join(import.meta.dirname, 'fixtures', 'sklearn', 'sk-binary'), join(dir, 'sk-binary'), {
      recursive: true,
    });
    server = await startTestServer({
      MODELS_DIR: dir,
      DRIFT_CAPTURE_ROWS: '200',
      DRIFT_WINDOW_ROWS: '200',
      DRIFT_MIN_ROWS: '200',
      ADMIN_OPEN: 'true',
      CACHE: 'off',
    });
  });
  afterAll(async () => {
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const infer = (instances: number[][]) => server.post('/predict/batch', { model: 'sk-binary', instances });

  it('captures its first rows as the reference, keeps it in model.json, and measures the rows after', async () => {
    const before = await json(await server.get('/models/sk-binary/drift'));
    expect(before).toMatchObject({
      status: 'no_reference',
      reference: null,
      capturing: { rows: 0, target: 200 },
    });
    expect((await infer(rows(150))).status).toBe(200);
    expect((await json(await server.get('/models/sk-binary/drift'))).capturing).toEqual({
      rows: 150,
      target: 200,
    });
    expect((await infer(rows(100))).status).toBe(200);
    const captured = await json(await server.get('/models/sk-binary/drift'));
    expect(captured).toMatchObject({
      status: 'collecting',
      reference: { source: 'captured', rows: 200 },
      capturing: null,
    });
    // Counting starts with the batches after the one that completed the capture.
    expect(captured.window.rows).toBe(0);
    expect((await infer(rows(40))).status).toBe(200);
    expect((await json(await server.get('/models/sk-binary/drift'))).window.rows).toBe(40);
    await expect
      .poll(
        () =>
          JSON.parse(readFileSync(join(dir, 'sk-binary', '1', 'model.json'), 'utf8')).drift_reference?.source,
      )
      .toBe('captured');
    expect((await infer(rows(200, 3))).status).toBe(200);
    const shifted = await json(await server.get('/models/sk-binary/drift'));
    expect(shifted.status).toBe('drift');
    expect(shifted.features.map((f: { name: string }) => f.name)).toEqual(
      Array.from({ length: width }, (_, i) => String(i)),
    );
  });

  it('takes an uploaded reference (rows of training data, or bins) and refuses malformed ones naming the field', async () => {
    const upload = (body: unknown) =>
      fetch(`${server.url}/models/sk-binary/versions/1/drift/reference`, {
        method: 'PUT',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const res = await upload({ rows: rows(300) });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({
      model: 'sk-binary',
      version: '1',
      reference: { source: 'uploaded', rows: 300 },
      persisted: true,
    });
    const now = await json(await server.get('/models/sk-binary/drift'));
    expect(now).toMatchObject({ reference: { source: 'uploaded', rows: 300 }, window: { rows: 0 } });
    expect(
      JSON.parse(readFileSync(join(dir, 'sk-binary', '1', 'model.json'), 'utf8')).drift_reference.source,
    ).toBe('uploaded');

    const bins = { cuts: [0], proportions: [0.5, 0.5] };
    const cases: [unknown, number, string][] = [
      [{ rows: rows(10) }, 422, 'rows'],
      [{ rows: [[1, 2]] }, 422, 'rows'],
      [{ reference: { features: [bins] } }, 422, 'reference.features'],
      [
        { reference: { features: Array(width).fill({ cuts: [1, 0], proportions: [0.3, 0.3, 0.4] }) } },
        422,
        'reference.features[0].cuts',
      ],
      [
        { reference: { features: Array(width).fill({ cuts: [0], proportions: [0.3, 0.3] }) } },
        422,
        'reference.features[0].proportions',
      ],
      [{ reference: { features: Array(width).fill(bins) }, rows: rows(200) }, 422, 'reference'],
    ];
    for (const [body, status, field] of cases) {
      const r = await upload(body);
      const text = await r.text();
      expect(r.status, text).toBe(status);
      expect(JSON.parse(text).error.field, text).toBe(field);
    }
    const ok = await upload({ reference: { features: Array(width).fill(bins) } });
    expect(ok.status).toBe(200);
    expect((await json(await server.get('/models/sk-binary/drift'))).reference.source).toBe('uploaded');
  });
});
