/** The audit log against the machine's real Postgres: batched writes, an outage mid-load, replay, shutdown. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditLog } from '../src/node/audit/audit-log.js';
import { createDeadLetter } from '../src/node/audit/dead-letter.js';
import { createPgStore } from '../src/node/audit/pg-store.js';
import { createSpool } from '../src/node/audit/spool.js';
import { json, startTestServer } from './server.js';
import { createProxy, freshDatabase } from './services.js';

type Db = Awaited<ReturnType<typeof freshDatabase>>;
const dbs: Db[] = [];
afterAll(async () => {
  await Promise.all(dbs.map((d) => d.drop()));
});
const newDb = async () => {
  const db = await freshDatabase('audit');
  dbs.push(db);
  return db;
};
const count = async (db: Db) => {
  const r = await db.query('SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids FROM prediction_audit');
  return r.rows[0] as { n: number; ids: number };
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('audit to Postgres', () => {
  let db: Db;
  let server: Awaited<ReturnType<typeof startTestServer>>;
  beforeAll(async () => {
    db = await newDb();
    server = await startTestServer({ AUDIT: 'on', DATABASE_URL: db.url, AUDIT_FLUSH_MS: '50' });
    await server.audit!.ready;
    if (!server.audit!.status().database_connected) throw new Error('the audit store did not connect');
  });
  afterAll(() => server.close());

  it('writes one record per answered request, cached or not, single, batch or v2, with what it answered', async () => {
    await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], request_id: 'req-single' });
    await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], request_id: 'req-cached' });
    await server.post('/predict/batch', {
      instances: [
        [1, 2, 3, 4, 5, 6, 7],
        [2, 2, 2, 2, 2, 2, 2],
      ],
      request_id: 'req-batch',
    });
    await server.post('/v2/models/iris/infer', {
      id: 'req-v2',
      inputs: [{ name: 'float_input', shape: [1, 4], datatype: 'FP32', data: [5, 3, 1, 0.2] }],
    });
    await server.post('/predict', { features: [1, 2] }); // refused: 422, no record
    await expect.poll(async () => (await count(db)).n).toBe(4);
    const rows = (
      await db.query(
        'SELECT request_id, route, rows, cache, model, model_version, model_sha256, input, output, status FROM prediction_audit ORDER BY time',
      )
    ).rows;
    expect(rows.map((r) => [r.request_id, r.route, r.rows, r.cache])).toEqual([
      ['req-single', '/predict', 1, null],
      ['req-cached', '/predict', 1, 'l1'],
      ['req-batch', '/predict/batch', 2, 'mixed'],
      ['req-v2', '/v2/models/:name/infer', 1, null],
    ]);
    expect(rows[0].input).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(rows[0].output.label).toBe('stays');
    expect(rows[0].model_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(rows.every((r) => r.status === 200)).toBe(true);
    const idx = (
      await db.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'prediction_audit'`)
    ).rows.map((r) => r.indexname);
    expect(idx).toEqual(
      expect.arrayContaining([
        'prediction_audit_pkey',
        'prediction_audit_time_idx',
        'prediction_audit_model_idx',
      ]),
    );
  });
});

it('loses nothing and duplicates nothing when Postgres drops out mid-load and comes back', async () => {
  const db = await newDb();
  const proxy = await createProxy(5432);
  const url = db.url.replace('127.0.0.1:5432', `127.0.0.1:${proxy.port}`);
  const server = await startTestServer({
    AUDIT: 'on',
    DATABASE_URL: url,
    AUDIT_FLUSH_MS: '50',
    AUDIT_RETRY_MS: '200',
    AUDIT_BATCH_ROWS: '200',
  });
  try {
    await expect.poll(async () => (await json(await server.get('/health'))).database_connected).toBe(true);
    let stop = false;
    let ok = 0;
    let n = 0;
    const bodies = [
      () => ['/predict', { features: [n % 70, n % 90, n, 12, 2, 1, 3] }],
      () => ['/predict', { features: [1, 1, 1, 1, 1, 1, 1] }], // cached after the first
      () => [
        '/predict/batch',
        {
          instances: [
            [n, 1, 1, 1, 1, 1, 1],
            [n, 2, 2, 2, 2, 2, 2],
          ],
        },
      ],
      () => [
        '/v2/models/iris/infer',
        { inputs: [{ name: 'float_input', shape: [1, 4], datatype: 'FP32', data: [n % 7, 3, 1, 0.2] }] },
      ],
    ] as const;
    const loop = async () => {
      while (!stop) {
        n++;
        const [path, body] = bodies[n % bodies.length]!() as [string, unknown];
        const res = await server.post(path, body);
        if (res.status === 200) ok++;
        await res.arrayBuffer();
      }
    };
    const load = Promise.all(Array.from({ length: 16 }, loop));
    await sleep(500);
    await proxy.cut();
    await expect
      .poll(async () => (await json(await server.get('/health'))).database_connected, { timeout: 5000 })
      .toBe(false);
    await expect
      .poll(async () => (await json(await server.get('/health'))).audit_spool_rows, { timeout: 5000 })
      .toBeGreaterThan(0);
    await sleep(700);
    await proxy.restore();
    await sleep(500);
    stop = true;
    await load;
    await expect
      .poll(
        async () => {
          const h = await json(await server.get('/health'));
          if (process.env.DEBUG_AUDIT) console.log(JSON.stringify(h));
          return h.database_connected && h.audit_queue === 0 && h.audit_spool_rows === 0;
        },
        { timeout: 15_000, interval: 200 },
      )
      .toBe(true);
    const { n: written, ids } = await count(db);
    expect(ok).toBeGreaterThan(200);
    expect(written).toBe(ok);
    expect(ids).toBe(written);
  } finally {
    await server.close();
    proxy.close();
  }
});

it('on shutdown writes every queued record, or spools it when the database is gone', async () => {
  const db = await newDb();
  const proxy = await createProxy(5432);
  const url = db.url.replace('127.0.0.1:5432', `127.0.0.1:${proxy.port}`);
  const auditDir = mkdtempSync(join(tmpdir(), 'audit-'));
  const env = {
    AUDIT: 'on',
    DATABASE_URL: url,
    AUDIT_DIR: auditDir,
    AUDIT_FLUSH_MS: '60000',
    AUDIT_BATCH_ROWS: '10000',
  };
  const first = await startTestServer(env);
  await expect.poll(async () => (await json(await first.get('/health'))).database_connected).toBe(true);
  await Promise.all(
    Array.from({ length: 50 }, (_, i) => first.post('/predict', { features: [i, 1, 1, 1, 1, 1, 1] })),
  );
  await first.close(); // flush interval is a minute away: close itself must write them
  expect((await count(db)).n).toBe(50);

  const second = await startTestServer(env);
  await expect.poll(async () => (await json(await second.get('/health'))).database_connected).toBe(true);
  await Promise.all(
    Array.from({ length: 30 }, (_, i) => second.post('/predict', { features: [i, 2, 2, 2, 2, 2, 2] })),
  );
  await proxy.cut();
  await second.close(); // the database is gone: they go to the spool
  expect(createSpool(join(auditDir, 'spool')).rows).toBe(30);

  await proxy.restore();
  const third = await startTestServer(env); // replays the spool on start
  await expect.poll(async () => (await count(db)).n, { timeout: 10_000 }).toBe(80);
  // The spool's count drops once the replayed file is deleted, just after its rows are in.
  await expect.poll(async () => (await json(await third.get('/health'))).audit_spool_rows).toBe(0);
  await third.close();
  proxy.close();
});

it('a replay that dies halfway is replayed again without duplicates', async () => {
  const db = await newDb();
  const store = createPgStore({ url: db.url });
  await store.init();
  const dir = mkdtempSync(join(tmpdir(), 'spool-'));
  const spool = createSpool(dir);
  const record = (i: number) =>
    JSON.stringify({
      id: crypto.randomUUID(),
      request_id: `r${i}`,
      time: new Date().toISOString(),
      route: '/predict',
      model: 'm',
      model_version: '1',
      model_sha256: 'x',
      input: [i],
      output: {},
      rows: 1,
      latency_ms: 1,
      cache: null,
      status: 200,
      client_id: null,
      api_key: null,
    });
  await spool.append(Array.from({ length: 250 }, (_, i) => record(i)));
  let calls = 0;
  await expect(
    spool.replay(async (lines) => {
      if (++calls === 2) throw new Error('crash mid-replay');
      await store.insert(`[${lines.join(',')}]`);
    }, 100),
  ).rejects.toThrow('crash mid-replay');
  expect((await count(db)).n).toBe(100);
  // A new process finds the half-replayed file, and records spooled since then.
  writeFileSync(join(dir, 'audit-spool.jsonl'), `${record(1000)}\n`, { flag: 'a' });
  const again = createSpool(dir);
  expect(again.rows).toBe(251);
  await again.replay((lines) => store.insert(`[${lines.join(',')}]`).then(() => {}), 100);
  expect(await count(db)).toEqual({ n: 251, ids: 251 });
  expect(again.rows).toBe(0);
  await store.close();
});

describe('no record can poison the audit log', () => {
  it('stores records whose strings Postgres cannot hold (NUL, lone surrogates), and every record after them', async () => {
    const db = await newDb();
    const server = await startTestServer({ AUDIT: 'on', DATABASE_URL: db.url, AUDIT_FLUSH_MS: '50' });
    try {
      await server.audit!.ready;
      const poisons = [
        server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], request_id: 'nul\u0000id' }),
        server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], request_id: 'lone\ud800' }),
        server.post('/v2/models/iris/infer', {
          id: '\udc00v2',
          inputs: [
            {
              name: 'float_input',
              shape: [1, 4],
              datatype: 'FP32',
              data: [5, 3, 1, 0.2],
              parameters: { 'k\u0000': 'v\ud800', nested: ['\u0000'] },
            },
          ],
        }),
      ];
      for (const res of await Promise.all(poisons)) expect(res.status).toBe(200);
      for (let i = 0; i < 50; i++)
        expect((await server.post('/predict', { features: [i, 2, 3, 4, 5, 6, 7] })).status).toBe(200);
      // Once, one such record failed its whole batch, and every later record only spooled.
      await expect.poll(async () => (await count(db)).n, { timeout: 10_000 }).toBe(53);
      const ids = (
        await db.query(
          "SELECT request_id FROM prediction_audit WHERE request_id LIKE '%\uFFFD%' ORDER BY request_id",
        )
      ).rows;
      expect(ids.map((r) => r.request_id).sort()).toEqual(['lone\uFFFD', 'nul\uFFFDid', '\uFFFDv2'].sort());
      const params = (await db.query("SELECT input FROM prediction_audit WHERE route LIKE '/v2%'")).rows[0]
        .input;
      expect(params[0].parameters).toEqual({ 'k\uFFFD': 'v\uFFFD', nested: ['\uFFFD'] });
      expect(server.audit!.status()).toMatchObject({ audit_spool_rows: 0, audit_dead_letter_rows: 0 });
    } finally {
      await server.close();
    }
  });

  it('sets aside a record the store refuses for its data, writes the rest, and replays a spool holding one', async () => {
    const db = await newDb();
    const dir = mkdtempSync(join(tmpdir(), 'audit-'));
    const record = (i: number, time = new Date().toISOString()) => ({
      id: crypto.randomUUID(),
      request_id: `r${i}`,
      time,
      route: '/predict',
      model: 'churn',
      model_version: '2',
      model_sha256: 'x',
      input: [i],
      output: { prediction: 0 },
      rows: 1,
      latency_ms: 1,
      cache: null,
      status: 200,
      client_id: null,
      api_key: null,
    });
    // A spool left by an earlier run, with a refused record in the middle of it.
    const spoolDir = join(dir, 'spool');
    const spool = createSpool(spoolDir);
    await spool.append(
      [1, 2, 3].map((i) => JSON.stringify(record(100 + i, i === 2 ? 'not a time' : undefined))),
    );
    const deadLetter = createDeadLetter(join(dir, 'dead-letter'));
    const refused: number[] = [];
    const log = createAuditLog({
      store: createPgStore({ url: db.url }),
      spool: createSpool(spoolDir),
      deadLetter,
      batchRows: 1000,
      flushMs: 50,
      maxQueue: 10_000,
      retryMs: 100,
      observer: { written() {}, failed() {}, deadLettered: (n) => refused.push(n), dropped() {} },
    });
    try {
      await log.ready;
      for (let i = 0; i < 10; i++) log.record(record(i));
      log.record(record(10, '2026-13-45T99:00:00Z'));
      for (let i = 11; i < 21; i++) log.record(record(i));
      await log.flush();
      expect((await count(db)).n).toBe(22); // 20 new records + 2 spooled ones
      expect(refused).toEqual([1, 1]);
      expect(log.status()).toMatchObject({
        database_connected: true,
        audit_spool_rows: 0,
        audit_dead_letter_rows: 2,
      });
      const lines = readFileSync(deadLetter.path, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(lines.map((l) => JSON.parse(l.record).request_id).sort()).toEqual(['r10', 'r102']);
      expect(lines[0].reason).toMatch(/time|date/i);
    } finally {
      await log.close();
    }
  });
});
