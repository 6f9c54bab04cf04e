/**
 * The audit log against the machine's real Postgres (and the embedded SQLite file): what each record holds,
 * hostile strings, an outage of 20 s under load, shutdown, and a record the store refuses for its data.
 */
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeTensorPack } from '../src/core/audit-codec.js';
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
const values = (pack: Uint8Array, name: string) => {
  const t = decodeTensorPack(pack).find((x) => x.name === name)!;
  return { dims: t.dims, type: t.type, data: Array.from(t.data as ArrayLike<number | bigint>, Number) };
};

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

  it('writes one record per answered request, cached or not, single, batch or v2, with the tensors it answered from', async () => {
    const single = await json(
      await server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], request_id: 'req-single' }),
    );
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
      outputs: [{ name: 'probabilities' }],
    });
    await server.post('/predict', { features: [1, 2] }); // refused: 422, no record
    await expect.poll(async () => (await count(db)).n).toBe(4);
    const rows = (
      await db.query(
        `SELECT id::text AS id, request_id, route, rows, cache, model, model_version, model_sha256, input, output,
                status, extract(epoch from time) * 1000 AS ms FROM prediction_audit ORDER BY time, id`,
      )
    ).rows;
    expect(rows.map((r) => [r.request_id, r.route, r.rows, r.cache])).toEqual([
      ['req-single', '/predict', 1, null],
      ['req-cached', '/predict', 1, 'l1'],
      ['req-batch', '/predict/batch', 2, 'mixed'],
      ['req-v2', '/v2/models/:name/infer', 1, null],
    ]);
    // The model's input as it saw it, and the outputs the answer came from.
    expect(values(rows[0].input, 'float_input')).toEqual({
      dims: [1, 7],
      type: 'float32',
      data: [1, 2, 3, 4, 5, 6, 7],
    });
    expect(values(rows[0].output, 'label').data).toEqual([0]);
    const probabilities = values(rows[0].output, 'probabilities').data;
    expect(probabilities[1]).toBeCloseTo(single.probability, 6);
    expect(values(rows[2].input, 'float_input').data).toEqual([1, 2, 3, 4, 5, 6, 7, 2, 2, 2, 2, 2, 2, 2]);
    expect(decodeTensorPack(rows[3].output).map((t) => t.name)).toEqual(['probabilities']);
    expect(rows[0].model_sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(rows.every((r) => r.status === 200)).toBe(true);
    // UUIDv7 ids carry the record's time.
    for (const r of rows) {
      expect(r.id[14]).toBe('7');
      expect(Number.parseInt(r.id.replaceAll('-', '').slice(0, 12), 16)).toBe(Math.floor(Number(r.ms)));
    }
    // Partitioned by day, with the indexes the read routes use.
    const partitions = (
      await db.query(
        `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'prediction_audit'::regclass`,
      )
    ).rows.map((r) => r.relname);
    expect(partitions).toEqual([
      `prediction_audit_p${new Date().toISOString().slice(0, 10).replaceAll('-', '')}`,
    ]);
    const idx = (
      await db.query(`SELECT indexname FROM pg_indexes WHERE tablename = 'prediction_audit'`)
    ).rows.map((r) => r.indexname);
    expect(idx).toEqual(
      expect.arrayContaining([
        'prediction_audit_pkey',
        'prediction_audit_by_time',
        'prediction_audit_by_model',
        'prediction_audit_by_request',
      ]),
    );
  });

  it('takes hostile strings in every string field it keeps (NUL, lone surrogates), and every record after them', async () => {
    const before = (await count(db)).n;
    const poisons = [
      server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], request_id: 'nul\u0000id' }),
      server.post('/predict', { features: [1, 2, 3, 4, 5, 6, 7], request_id: 'lone\ud800' }),
      server.post('/predict/batch', { instances: [[1, 2, 3, 4, 5, 6, 7]], request_id: '\udc00batch\u0000' }),
      server.post('/v2/models/iris/infer', {
        id: '\udc00v2\u0000',
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
      server.post(
        '/predict',
        { features: [1, 2, 3, 4, 5, 6, 7] },
        { 'x-client-id': 'ÿ\u00fe client', 'x-request-id': 'hdr\u00ff' },
      ),
    ];
    for (const res of await Promise.all(poisons)) expect(res.status).toBe(200);
    for (let i = 0; i < 50; i++)
      expect((await server.post('/predict', { features: [i, 2, 3, 4, 5, 6, 7] })).status).toBe(200);
    await expect.poll(async () => (await count(db)).n, { timeout: 10_000 }).toBe(before + 55);
    const ids = (
      await db.query(
        "SELECT request_id FROM prediction_audit WHERE request_id LIKE '%\uFFFD%' ORDER BY request_id",
      )
    ).rows.map((r) => r.request_id);
    expect(ids.sort()).toEqual(['lone\uFFFD', 'nul\uFFFDid', '\uFFFDbatch\uFFFD', '\uFFFDv2\uFFFD'].sort());
    const client = (await db.query("SELECT client_id FROM prediction_audit WHERE request_id = 'hdr\u00ff'"))
      .rows;
    expect(client).toEqual([{ client_id: 'ÿ\u00fe client' }]);
    await expect.poll(() => server.audit!.status().audit_backlog_rows).toBe(0);
    expect(server.audit!.status().audit_dead_letter_rows).toBe(0);
  });
});

it('loses nothing and duplicates nothing when Postgres is cut for 20 s under load and comes back', async () => {
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
    const load = Promise.all(Array.from({ length: 8 }, loop));
    await sleep(500);
    await proxy.cut();
    await expect
      .poll(async () => (await json(await server.get('/health'))).database_connected, { timeout: 5000 })
      .toBe(false);
    await expect
      .poll(async () => (await json(await server.get('/health'))).audit_backlog_rows, { timeout: 5000 })
      .toBeGreaterThan(0);
    await sleep(20_000);
    const during = await json(await server.get('/health'));
    await proxy.restore();
    await sleep(500);
    stop = true;
    await load;
    await expect
      .poll(
        async () => {
          const h = await json(await server.get('/health'));
          return h.database_connected && h.audit_queue === 0 && h.audit_backlog_rows === 0;
        },
        { timeout: 20_000, interval: 200 },
      )
      .toBe(true);
    const { n: written, ids } = await count(db);
    console.log(
      `20 s outage: ${ok} answered, ${during.audit_backlog_rows} waiting in the log (${during.audit_log_bytes} bytes) at its end; ${written} rows after`,
    );
    expect(ok).toBeGreaterThan(1000);
    expect(written).toBe(ok);
    expect(ids).toBe(written);
  } finally {
    await server.close();
    proxy.close();
  }
}, 90_000);

it('on shutdown writes every record the store takes, and keeps the rest in the log for the next start', async () => {
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
  await first.close(); // the flush interval is a minute away: close itself must write them
  expect((await count(db)).n).toBe(50);

  const second = await startTestServer(env);
  await expect.poll(async () => (await json(await second.get('/health'))).database_connected).toBe(true);
  await Promise.all(
    Array.from({ length: 30 }, (_, i) => second.post('/predict', { features: [i, 2, 2, 2, 2, 2, 2] })),
  );
  await proxy.cut();
  await second.close(); // the database is gone: they stay in the log
  expect((await count(db)).n).toBe(50);

  await proxy.restore();
  const third = await startTestServer(env); // writes the log's backlog on start
  await expect.poll(async () => (await count(db)).n, { timeout: 10_000 }).toBe(80);
  await expect.poll(async () => (await json(await third.get('/health'))).audit_backlog_rows).toBe(0);
  expect(await count(db)).toEqual({ n: 80, ids: 80 });
  await third.close();
  proxy.close();
});

/** A frame as the request path writes it, with `requestId` given as raw bytes (which may not be UTF-8). */
function frame(i: number, requestId: Uint8Array): Buffer {
  const str = (b: Uint8Array | null) => {
    if (b === null) return Buffer.from([0xff, 0xff, 0xff, 0xff]);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(b.length);
    return Buffer.concat([len, b]);
  };
  const fixed = Buffer.alloc(36);
  fixed[0] = 1;
  fixed.writeUInt16LE(200, 2);
  fixed.writeUInt32LE(1, 4);
  fixed.writeDoubleLE(Date.now() + i, 8);
  fixed.writeFloatLE(1.5, 16);
  fixed.writeUInt16BE(0x7000 | i, 26); // an id of its own (version 7), written here as the log writer would
  fixed[28] = 0x80;
  fixed.writeUInt32BE(i, 32);
  const text = (s: string) => new TextEncoder().encode(s);
  const emptyPack = Buffer.from([0]);
  const payload = Buffer.concat([
    fixed,
    str(requestId),
    str(text('/predict')),
    str(text('churn')),
    str(text('2')),
    str(text('x'.repeat(64))),
    str(null),
    str(null),
    emptyPack,
    emptyPack,
  ]);
  const header = Buffer.alloc(8);
  header.writeUInt32LE(payload.length, 0);
  header.writeUInt32LE(crc32(payload), 4);
  return Buffer.concat([header, payload]);
}

it('sets aside a record the store refuses for its data (bytes Postgres will not take as text), and writes the rest', async () => {
  const db = await newDb();
  const auditDir = mkdtempSync(join(tmpdir(), 'audit-'));
  // A log left by an earlier run (a damaged disk, or an older writer): one record of twenty, its checksum
  // intact, holds a request id that is not UTF-8.
  mkdirSync(join(auditDir, 'log'));
  const frames = Array.from({ length: 20 }, (_, i) =>
    frame(i, i === 9 ? Uint8Array.of(0x62, 0x61, 0x64, 0xff, 0xfe) : new TextEncoder().encode(`r${i}`)),
  );
  writeFileSync(join(auditDir, 'log', '000000000001.seg'), Buffer.concat(frames));
  const server = await startTestServer({
    AUDIT: 'on',
    DATABASE_URL: db.url,
    AUDIT_DIR: auditDir,
    AUDIT_FLUSH_MS: '50',
  });
  try {
    await expect.poll(async () => (await count(db)).n, { timeout: 10_000 }).toBe(19);
    for (let i = 0; i < 5; i++) await server.post('/predict', { features: [i, 2, 3, 4, 5, 6, 7] });
    await expect.poll(async () => (await count(db)).n, { timeout: 10_000 }).toBe(24);
    await expect.poll(async () => (await json(await server.get('/health'))).audit_backlog_rows).toBe(0);
    expect((await json(await server.get('/health'))).audit_dead_letter_rows).toBe(1);
    const metrics = await (await server.get('/metrics')).text();
    expect(metrics).toMatch(/^onnxserve_audit_dead_letter_total 1$/m);
    const lines = readFileSync(join(auditDir, 'audit-dead-letter.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(1);
    expect(lines[0].reason).toMatch(/UTF8|encoding/i);
    expect(lines[0].record.request_id).toBe('bad\uFFFD\uFFFD');
    expect(lines[0].record.model).toBe('churn');
  } finally {
    await server.close();
  }
});

it('audits into the embedded SQLite file by default, and keeps it across a restart', async () => {
  const auditDir = mkdtempSync(join(tmpdir(), 'audit-'));
  const env = { AUDIT: 'on', AUDIT_DIR: auditDir, AUDIT_FLUSH_MS: '50' };
  const first = await startTestServer(env);
  await expect.poll(async () => (await json(await first.get('/health'))).database_connected).toBe(true);
  expect((await json(await first.get('/health'))).audit_store).toBe('sqlite');
  for (let i = 0; i < 5; i++) {
    expect(
      (await first.post('/predict', { features: [i, 1, 1, 1, 1, 1, 1], request_id: `s${i}` })).status,
    ).toBe(200);
  }
  await first.close();
  const second = await startTestServer(env);
  await second.post('/predict', { features: [9, 1, 1, 1, 1, 1, 1], request_id: 's9' });
  await expect.poll(async () => (await json(await second.get('/health'))).audit_backlog_rows).toBe(0);
  await sleep(100);
  await second.close();
  const file = new Database(join(auditDir, 'audit.sqlite'), { readonly: true });
  const rows = file.prepare('SELECT request_id, input FROM prediction_audit ORDER BY time').all() as {
    request_id: string;
    input: Uint8Array;
  }[];
  file.close();
  expect(rows.map((r) => r.request_id)).toEqual(['s0', 's1', 's2', 's3', 's4', 's9']);
  expect(values(rows[5]!.input, 'float_input').data).toEqual([9, 1, 1, 1, 1, 1, 1]);
});
