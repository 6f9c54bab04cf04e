/**
 * Stages, traffic policies and shadow traffic, on a real server with its worker pool, over HTTP:
 *   - load sent without pause while versions are promoted, reloaded, split, rolled back, added and unloaded
 *     (each a new worker pool) and another model unloaded and loaded: zero failed requests, each answered by
 *     a version live at that moment;
 *   - an A/B split within ±3 % of its weights over 10,000 requests; sticky callers keep their version;
 *   - a shadow never changes an answer, and is compared;
 *   - stage history in Postgres (who, when, why) and in model.json; a restart serves the same version;
 *   - the CLI (`npm run models -- promote …`), and 4xx for every malformed change.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKey, keyDigestHex, keyLine } from '../src/core/access.js';
import { modelsCopy } from './models-copy.js';
import { client, json, startTestServer } from './server.js';
import { createProxy, freshDatabase } from './services.js';

const ROOT = join(import.meta.dirname, '..');
const ADMIN = generateKey();
const USER = generateKey();
const API_KEYS = [
  keyLine('ops', ['predict', 'admin'], keyDigestHex(ADMIN)),
  keyLine('app', ['predict'], keyDigestHex(USER)),
].join('\n');
const admin = { authorization: `Bearer ${ADMIN}` };

type Server = Awaited<ReturnType<typeof startTestServer>>;

const row = (i: number) => ({
  tenure_months: 1 + (i % 72),
  monthly_charges: 20 + (i % 100),
  total_charges: 500 + i,
  contract_length: [1, 12, 24][i % 3],
  num_products: 1 + (i % 4),
  support_tickets: i % 6,
  satisfaction_score: 1 + (i % 5),
});

async function send(
  s: Server,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = admin,
) {
  const res = await fetch(s.url + path, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: await json(res) };
}

/** `n` predictions with `concurrency` in flight, each told apart by `i`; returns the answers in order. */
async function predictions(
  s: Server,
  n: number,
  concurrency: number,
  headers: (i: number) => Record<string, string> = () => ({}),
) {
  const out: { status: number; version: string }[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < n; i = next++) {
        const res = await s.post(
          '/predict',
          { model: 'churn', features: row(i), use_cache: false },
          headers(i),
        );
        const body = await json(res);
        out[i] = { status: res.status, version: body.model_version };
      }
    }),
  );
  return out;
}

describe('model lifecycle', () => {
  let server: Server;
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let dir: string;
  beforeAll(async () => {
    dir = modelsCopy();
    db = await freshDatabase('lifecycle');
    server = await startTestServer({
      MODELS_DIR: dir,
      DEFAULT_MODEL: 'churn',
      API_KEYS,
      AUDIT: 'on',
      DATABASE_URL: db.url,
      AUDIT_FLUSH_MS: '20',
      // Every request shadowed, however busy this process is (the rule that skips them is tested apart).
      SHADOW_MAX_LOAD: '1',
    });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
    await db?.drop();
  });

  it('keeps serving through promote, reload, split, canary, rollback, shadow and another model unloaded: zero failures, each answer from a live version', async () => {
    // The versions a request naming none may get now; during a change, the old and the new.
    let live = new Set(['2']);
    const change = async (next: string[], act: () => Promise<{ status: number; body: unknown }>) => {
      live = new Set([...live, ...next]);
      const r = await act();
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      live = new Set(next);
      await new Promise((r) => setTimeout(r, 400));
    };
    let stop = false;
    const answers: { status: number; version: string; ok: boolean; error?: string }[] = [];
    const loops = Array.from({ length: 6 }, async (_, k) => {
      for (let i = k; !stop; i += 6) {
        const before = new Set(live);
        try {
          const res = await server.post('/predict', { features: row(i), use_cache: false });
          const body = await json(res);
          const allowed = new Set([...before, ...live]);
          answers.push({
            status: res.status,
            version: body.model_version,
            ok: allowed.has(body.model_version),
            ...(res.status !== 200 ? { error: JSON.stringify(body) } : {}),
          });
        } catch (err) {
          answers.push({ status: 0, version: '', ok: false, error: String(err) });
        }
      }
    });
    await new Promise((r) => setTimeout(r, 300));
    await change(['1'], () =>
      send(server, 'POST', '/models/churn/versions/1/stage', { stage: 'production' }),
    );
    // A reload reads model.json again: version 1 stays production.
    await change(['1'], () => send(server, 'POST', '/v2/repository/models/churn/load', {}));
    await change(['1', '2'], () => send(server, 'PUT', '/models/churn/traffic', { split: { 1: 50, 2: 50 } }));
    await change(['1', '2'], () => send(server, 'PUT', '/models/churn/traffic', { split: { 1: 95, 2: 5 } }));
    // Roll back to 2: production again, and the split goes.
    await change(['2'], () => send(server, 'POST', '/model/load/2'));
    await change(['2'], () => send(server, 'POST', '/v2/repository/models/iris/unload', {}));
    await change(['2'], () => send(server, 'POST', '/v2/repository/models/iris/load', {}));
    // A new version put into the repository and loaded (a new worker pool, under load): as staging, it takes
    // no traffic; promoted, it takes it all; rolled back; then deleted and the model loaded again, which
    // unloads it (another new pool).
    const v3 = join(dir, 'churn', '3');
    cpSync(join(dir, 'churn', '2'), v3, { recursive: true });
    const meta = JSON.parse(readFileSync(join(v3, 'model.json'), 'utf8'));
    writeFileSync(
      join(v3, 'model.json'),
      JSON.stringify({ ...meta, stage: 'staging', stage_history: [] }, null, 2),
    );
    await change(['2'], () => send(server, 'POST', '/v2/repository/models/churn/load', {}));
    expect(
      (await json(await server.get('/models/churn'))).versions.map((v: { version: string }) => v.version),
    ).toEqual(['1', '2', '3']);
    await change(['3'], () =>
      send(server, 'POST', '/models/churn/versions/3/stage', { stage: 'production' }),
    );
    await change(['2'], () => send(server, 'POST', '/model/load/2'));
    rmSync(v3, { recursive: true });
    await change(['2'], () => send(server, 'POST', '/v2/repository/models/churn/load', {}));
    expect(
      (await json(await server.get('/models/churn'))).versions.map((v: { version: string }) => v.version),
    ).toEqual(['1', '2']);
    await change(['2'], () => send(server, 'PUT', '/models/churn/traffic', { shadow: { version: '1' } }));
    await change(['2'], () => send(server, 'PUT', '/models/churn/traffic', {}));
    stop = true;
    await Promise.all(loops);

    const failed = answers.filter((a) => a.status !== 200);
    const wrong = answers.filter((a) => a.status === 200 && !a.ok);
    console.log(
      `lifecycle under load: ${answers.length} requests, ${failed.length} failed, ${wrong.length} from a version not live; ` +
        `by version ${JSON.stringify(Object.fromEntries(['1', '2', '3'].map((v) => [v, answers.filter((a) => a.version === v).length])))}`,
    );
    expect(failed.slice(0, 3)).toEqual([]);
    expect(wrong.slice(0, 3)).toEqual([]);
    expect(answers.length).toBeGreaterThan(500);
    // Both versions answered at some point: the changes took effect under load.
    expect(answers.some((a) => a.version === '1')).toBe(true);
    expect(answers.some((a) => a.version === '3')).toBe(true);
    expect(answers.at(-1)!.version).toBe('2');
  }, 120_000);

  it('splits 10,000 requests within ±3 % of the weights; sticky callers keep their version', async () => {
    const set = await send(server, 'PUT', '/models/churn/traffic', { split: { 1: 70, 2: 30 } });
    expect(set.body.serving).toEqual([
      { version: '1', share: 0.7 },
      { version: '2', share: 0.3 },
    ]);
    const anonymous = await predictions(server, 10_000, 16);
    expect(anonymous.every((a) => a.status === 200)).toBe(true);
    const share2 = anonymous.filter((a) => a.version === '2').length / anonymous.length;
    console.log(
      `A/B 70/30 over 10,000 anonymous requests: version 2 answered ${(share2 * 100).toFixed(2)} %`,
    );
    expect(Math.abs(share2 - 0.3)).toBeLessThanOrEqual(0.03);

    // 400 callers by X-Client-Id, 5 requests each: each keeps one version, and the callers split ~70/30.
    const clients = await predictions(server, 2000, 16, (i) => ({ 'x-client-id': `user-${i % 400}` }));
    const byClient = new Map<number, Set<string>>();
    clients.forEach((a, i) => {
      expect(a.status).toBe(200);
      byClient.set(i % 400, (byClient.get(i % 400) ?? new Set()).add(a.version));
    });
    expect([...byClient.values()].every((v) => v.size === 1)).toBe(true);
    const clientShare2 = [...byClient.values()].filter((v) => v.has('2')).length / 400;
    console.log(
      `sticky: 400 callers, each kept one version; ${(clientShare2 * 100).toFixed(1)} % on version 2`,
    );
    expect(Math.abs(clientShare2 - 0.3)).toBeLessThan(0.08);

    // An API key is a caller too: the same key, the same version, every time.
    const keyed = await predictions(server, 100, 4, () => ({ 'x-api-key': USER }));
    expect(new Set(keyed.map((a) => a.version)).size).toBe(1);

    // A request naming a version gets it, whatever the split.
    const named = await server.post('/predict', { model: 'churn', version: '2', features: row(1) });
    expect((await json(named)).model_version).toBe('2');
    await send(server, 'PUT', '/models/churn/traffic', {});
  }, 180_000);

  it('runs a shadow off the path: answers are the same with it and without it, and the two versions are compared', async () => {
    const strip = (b: Record<string, unknown>) => {
      const { request_id: _r, latency_ms: _l, timestamp: _t, ...rest } = b;
      return rest;
    };
    const ask = async (i: number) =>
      strip(await json(await server.post('/predict', { features: row(i), use_cache: false })));
    const without = await Promise.all(Array.from({ length: 40 }, (_, i) => ask(i)));
    const set = await send(server, 'PUT', '/models/churn/traffic', { shadow: { version: '1' } });
    expect(set.status).toBe(200);
    expect(set.body.serving).toEqual([{ version: '2', share: 1 }]);
    const withShadow = await Promise.all(Array.from({ length: 40 }, (_, i) => ask(i)));
    expect(withShadow).toEqual(without);
    // Shadow runs finish after their answers: wait for them.
    let report = (await send(server, 'GET', '/models/churn/shadow')).body;
    for (let t = 0; t < 50 && report.requests !== 40; t++) {
      report = (await send(server, 'GET', '/models/churn/shadow')).body;
      if (report.requests === 40) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(report).toMatchObject({ shadow_version: '1', requests: 40, rows: 40, failures: 0, sample: 1 });
    // Versions 1 and 2 are different models (logistic regression, and a small network): they disagree on
    // some rows, and their probabilities differ.
    expect(report.agreement_rate).toBeGreaterThan(0.5);
    expect(report.agreement_rate).toBeLessThanOrEqual(1);
    expect(report.max_probability_difference).toBeGreaterThan(0);
    expect(report.mean_probability_difference).toBeLessThanOrEqual(report.max_probability_difference);
    expect(Object.keys(report.latency_ms).sort()).toEqual(['1', '2']);
    expect(report.latency_ms['1'].count).toBe(40);

    // Sampled: about a quarter of requests are shadowed.
    await send(server, 'PUT', '/models/churn/traffic', { shadow: { version: '1', sample: 0.25 } });
    const before = (await send(server, 'GET', '/models/churn/shadow')).body.requests;
    await Promise.all(Array.from({ length: 400 }, (_, i) => ask(i)));
    await new Promise((r) => setTimeout(r, 500));
    const sampled = (await send(server, 'GET', '/models/churn/shadow')).body.requests - before;
    expect(sampled).toBeGreaterThan(50);
    expect(sampled).toBeLessThan(150);
    await send(server, 'PUT', '/models/churn/traffic', {});
    expect((await send(server, 'GET', '/models/churn/shadow')).status).toBe(404);
  }, 60_000);

  it('records who changed a stage, when and why, in Postgres and in model.json', async () => {
    const r = await send(server, 'POST', '/models/churn/versions/1/stage', {
      stage: 'staging',
      reason: 'canary candidate',
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      version: '1',
      stage: 'staging',
      persisted: { store: true, model_json: true },
    });
    const rows = (
      await db.query(
        "SELECT version, stage, previous, by_key, reason FROM model_stage_history WHERE model = 'churn' ORDER BY id",
      )
    ).rows;
    expect(rows.at(-1)).toEqual({
      version: '1',
      stage: 'staging',
      previous: 'archived',
      by_key: 'ops',
      reason: 'canary candidate',
    });
    // Every change of the load test is there: 1 promoted, then archived when 2 was loaded back.
    expect(rows.map((x) => `${x.version}:${x.stage}`).slice(0, 3)).toEqual([
      '1:production',
      '1:archived',
      '2:production',
    ]);
    const meta = JSON.parse(readFileSync(join(dir, 'churn', '1', 'model.json'), 'utf8'));
    expect(meta.stage).toBe('staging');
    expect(meta.stage_history.at(-1)).toMatchObject({
      stage: 'staging',
      by: 'ops',
      reason: 'canary candidate',
    });
    const info = await send(server, 'GET', '/models/churn/versions/1/stage');
    expect(info.body.history[0]).toMatchObject({ stage: 'staging', by: 'ops' });
    const all = await send(server, 'GET', '/models/churn/stages');
    expect(all.body).toMatchObject({
      serving: '2',
      versions: [
        { version: '1', stage: 'staging' },
        { version: '2', stage: 'production' },
      ],
    });
    // The stage is in every version's description.
    const model = await json(await server.get('/models/churn'));
    expect(model.default_version).toBe('2');
    expect(model.versions.map((v: { stage: string }) => v.stage)).toEqual(['staging', 'production']);
  });

  it('refuses malformed changes with a 4xx naming the field, and callers without the admin scope', async () => {
    const cases: [string, string, unknown, number, string, string?][] = [
      ['POST', '/models/churn/versions/1/stage', { stage: 'prod' }, 422, 'ERR_VALIDATION', 'stage'],
      [
        'POST',
        '/models/churn/versions/1/stage',
        { stage: 'production', extra: 1 },
        422,
        'ERR_VALIDATION',
        'extra',
      ],
      [
        'POST',
        '/models/churn/versions/9/stage',
        { stage: 'production' },
        404,
        'ERR_VERSION_NOT_FOUND',
        'version',
      ],
      ['POST', '/models/nope/versions/1/stage', { stage: 'production' }, 404, 'ERR_MODEL_NOT_FOUND', 'model'],
      ['PUT', '/models/churn/traffic', { split: { 1: -1 } }, 422, 'ERR_VALIDATION', 'split.1'],
      ['PUT', '/models/churn/traffic', { split: { 1: 0 } }, 422, 'ERR_VALIDATION', 'split'],
      ['PUT', '/models/churn/traffic', { split: { 7: 1 } }, 404, 'ERR_VERSION_NOT_FOUND', 'split.7'],
      ['PUT', '/models/churn/traffic', { version: '1', split: { 1: 1 } }, 422, 'ERR_VALIDATION', 'split'],
      [
        'PUT',
        '/models/churn/traffic',
        { split: { 2: 1 }, shadow: { version: '2' } },
        422,
        'ERR_VALIDATION',
        'shadow.version',
      ],
      [
        'PUT',
        '/models/churn/traffic',
        { shadow: { version: '1', sample: 2 } },
        422,
        'ERR_VALIDATION',
        'shadow.sample',
      ],
      ['PUT', '/models/churn/traffic', '{"split":', 400, 'ERR_BAD_JSON', 'body'],
      ['GET', '/models/churn/shadow', undefined, 404, 'ERR_NO_SHADOW', 'name'],
      ['POST', '/model/load/9', undefined, 404, 'ERR_VERSION_NOT_FOUND', 'version'],
    ];
    for (const [method, path, body, status, code, field] of cases) {
      const res = await fetch(server.url + path, {
        method,
        headers: { 'content-type': 'application/json', ...admin },
        ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
      });
      const b = await json(res);
      expect([method, path, res.status, b.error?.code, b.error?.field]).toEqual([
        method,
        path,
        status,
        code,
        field,
      ]);
    }
    // Nothing changed.
    expect((await send(server, 'GET', '/models/churn/traffic')).body).toMatchObject({
      policy: null,
      by: 'stage',
    });
    // A predict-only key, and no key: refused before anything is read.
    const user = await send(
      server,
      'PUT',
      '/models/churn/traffic',
      { version: '1' },
      { authorization: `Bearer ${USER}` },
    );
    expect([user.status, user.body.error.code]).toEqual([403, 'ERR_FORBIDDEN']);
    const none = await send(server, 'POST', '/models/churn/versions/1/stage', { stage: 'production' }, {});
    expect([none.status, none.body.error.code]).toEqual([401, 'ERR_UNAUTHENTICATED']);
  });

  it('a restart serves the same version: stages from model.json, the policy from traffic.json', async () => {
    await send(server, 'PUT', '/models/churn/traffic', { split: { 1: 1, 2: 3 }, sticky: false });
    expect(existsSync(join(dir, 'churn', 'traffic.json'))).toBe(true);
    const again = await startTestServer({ MODELS_DIR: dir, DEFAULT_MODEL: 'churn', API_KEYS });
    try {
      const t = await send(again, 'GET', '/models/churn/traffic');
      expect(t.body).toMatchObject({
        policy: { split: { 1: 1, 2: 3 }, sticky: false },
        serving: [
          { version: '1', share: 0.25 },
          { version: '2', share: 0.75 },
        ],
      });
      // Without a store, the history comes from model.json.
      const s = await send(again, 'GET', '/models/churn/versions/1/stage');
      expect(s.body.stage).toBe('staging');
      expect(s.body.history[0]).toMatchObject({ stage: 'staging', by: 'ops', reason: 'canary candidate' });
      await send(again, 'PUT', '/models/churn/traffic', {});
      expect(existsSync(join(dir, 'churn', 'traffic.json'))).toBe(false);
      const m = await json(await client(again.url).post('/predict', { features: row(3) }));
      expect(m.model_version).toBe('2');
    } finally {
      await again.close();
      await send(server, 'PUT', '/models/churn/traffic', {});
    }
  }, 120_000);

  it('a shadow uses only spare capacity: past SHADOW_MAX_LOAD a request is not shadowed, counted as skipped_busy, and answered the same', async () => {
    // SHADOW_MAX_LOAD=0: the event loop always counts as busy, so no request is shadowed.
    const busy = await startTestServer({
      MODELS_DIR: dir,
      DEFAULT_MODEL: 'churn',
      API_KEYS,
      SHADOW_MAX_LOAD: '0',
    });
    try {
      const ask = async (i: number) =>
        json(
          await client(busy.url).post('/predict', { features: row(i), use_cache: false, request_id: 'same' }),
        );
      const without = await Promise.all(Array.from({ length: 20 }, (_, i) => ask(i)));
      expect((await send(busy, 'PUT', '/models/churn/traffic', { shadow: { version: '1' } })).status).toBe(
        200,
      );
      const withShadow = await Promise.all(Array.from({ length: 20 }, (_, i) => ask(i)));
      const strip = ({ latency_ms: _l, timestamp: _t, ...rest }: Record<string, unknown>) => rest;
      expect(withShadow.map(strip)).toEqual(without.map(strip));
      await new Promise((r) => setTimeout(r, 300));
      expect((await send(busy, 'GET', '/models/churn/shadow')).body).toMatchObject({
        requests: 0,
        skipped_busy: 20,
        skipped: 0,
      });
    } finally {
      await busy.close();
      await send(server, 'PUT', '/models/churn/traffic', {});
    }
  }, 120_000);

  it('a restart runs the shadow traffic.json names, and compares it afresh', async () => {
    await send(server, 'PUT', '/models/churn/traffic', { shadow: { version: '1' } });
    const again = await startTestServer({
      MODELS_DIR: dir,
      DEFAULT_MODEL: 'churn',
      API_KEYS,
      SHADOW_MAX_LOAD: '1',
    });
    try {
      expect((await send(again, 'GET', '/models/churn/traffic')).body.policy).toMatchObject({
        shadow: { version: '1', sample: 1 },
      });
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          client(again.url).post('/predict', { features: row(i), use_cache: false }),
        ),
      );
      await expect
        .poll(async () => (await send(again, 'GET', '/models/churn/shadow')).body, { timeout: 5000 })
        .toMatchObject({ shadow_version: '1', requests: 20, failures: 0 });
    } finally {
      await again.close();
      await send(server, 'PUT', '/models/churn/traffic', {});
    }
  }, 120_000);

  it('npm run models -- promote NAME VERSION STAGE: the same change from a shell', async () => {
    const run = (args: string[], env: Record<string, string>) =>
      promisify(execFile)(process.execPath, [join(ROOT, 'scripts', 'models.mjs'), ...args], {
        env: { ...process.env, ...env },
      }).then(
        (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
        (e) => ({ code: e.code as number, out: e.stdout as string, err: e.stderr as string }),
      );
    const env = { ONNX_SERVE_URL: server.url, ONNX_SERVE_API_KEY: ADMIN };
    const ok = await run(['promote', 'churn', '1', 'production', '--reason', 'from the shell'], env);
    expect(ok.code, ok.err).toBe(0);
    expect(JSON.parse(ok.out)).toMatchObject({
      version: '1',
      stage: 'production',
      archived: ['2'],
      serving: '1',
    });
    const history = await run(['history', 'churn'], env);
    const changes = JSON.parse(history.out).history;
    expect(changes.slice(0, 2)).toMatchObject([
      { version: '1', stage: 'production', by: 'ops', reason: 'from the shell' },
      { version: '2', stage: 'archived', by: 'ops' },
    ]);
    const bad = await run(['promote', 'churn', '1', 'prod'], env);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/usage/);
    const refused = await run(['promote', 'churn', '9'], env);
    expect([refused.code, refused.err.trim()]).toEqual([
      1,
      "404 ERR_VERSION_NOT_FOUND: model 'churn' has no loaded version '9'",
    ]);
    const noKey = await run(['promote', 'churn', '2'], {
      ONNX_SERVE_URL: server.url,
      ONNX_SERVE_API_KEY: '',
    });
    expect(noKey.code).toBe(1);
    expect(noKey.err).toMatch(/^401 ERR_UNAUTHENTICATED/);
    const down = await run(['shadow', 'churn'], {
      ONNX_SERVE_URL: 'http://127.0.0.1:9',
      ONNX_SERVE_API_KEY: ADMIN,
    });
    expect([down.code, down.err]).toEqual([1, expect.stringMatching(/cannot reach the server/)]);
  }, 60_000);
});

it('a reload that arrives while a stage change is being written waits for it: the change is not undone', async () => {
  // The store answers slowly (its bytes held), so the promotion is in memory, half written to model.json
  // (the archived version's file first), when the reload reads the files. Before, the reload read them
  // then, and put the old stages back: the promoted version stopped serving.
  const db = await freshDatabase('lifecycle_race');
  const proxy = await createProxy(5432);
  const dir = modelsCopy();
  const server = await startTestServer({
    MODELS_DIR: dir,
    DEFAULT_MODEL: 'churn',
    API_KEYS,
    AUDIT: 'on',
    DATABASE_URL: db.url.replace('127.0.0.1:5432', `127.0.0.1:${proxy.port}`),
    WATCH_MODELS: 'false',
  });
  try {
    expect((await send(server, 'GET', '/models/churn/stages')).body.serving).toBe('2');
    expect(
      (await send(server, 'POST', '/models/churn/versions/2/stage', { stage: 'production' })).status,
    ).toBe(200);
    proxy.hold();
    const promoted = send(server, 'POST', '/models/churn/versions/1/stage', { stage: 'production' });
    await new Promise((r) => setTimeout(r, 300));
    const reloaded = send(server, 'POST', '/v2/repository/models/churn/load', {});
    await new Promise((r) => setTimeout(r, 700));
    proxy.release();
    expect((await promoted).status).toBe(200);
    expect((await reloaded).status).toBe(200);
    const stages = (await send(server, 'GET', '/models/churn/stages')).body;
    expect(stages.serving).toBe('1');
    expect(stages.versions).toEqual([
      { version: '1', stage: 'production' },
      { version: '2', stage: 'archived' },
    ]);
    const answer = await json(await server.post('/predict', { features: row(1), use_cache: false }));
    expect(answer.model_version).toBe('1');
  } finally {
    await server.close();
    proxy.close();
    await db.drop();
  }
}, 60_000);
