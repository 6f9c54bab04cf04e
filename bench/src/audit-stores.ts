/**
 * `npm run bench:audit-stores`: CPU per audit record at each step of the log, and for each store the
 * embedded default was chosen among, measured in CPU time (steady on a shared machine, unlike req/s):
 *   capture      the request path's cost: one record written in binary (AuditChunkWriter), against
 *                JSON.stringify of the same record (what the request path did before)
 *   log          the writer thread's append: id, CRC-32, one write per chunk; then reading it back
 *   stores       one batch of BATCH records at a time, with the log position in the same transaction:
 *                SQLite (better-sqlite3), PGlite (Postgres in WASM: the former embedded default, both as it
 *                was, jsonb through jsonb_populate_recordset, and at its best, COPY binary of tensor packs),
 *                Postgres (COPY binary of tensor packs; and as it was, jsonb, for the before figure)
 *   queries      a lookup by request id and a newest-first page of 100 in each store, after N records;
 *                the segment log alone can only scan for them
 * Postgres's own CPU is read from /proc for its backend process (it runs beside us on this machine).
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import Database from 'better-sqlite3';
import pg from 'pg';
import type { AuditRecord } from '../../src/core/audit.js';
import { AuditChunkWriter, decodeRecord } from '../../src/core/audit-codec.js';
import {
  AUDIT_COLUMNS,
  AUDIT_TABLE,
  auditSearchSql,
  dayOf,
  PG_SCHEMA_SQL,
  partitionSql,
} from '../../src/core/audit-sql.js';
import { copyBinary, createPgLogStore, createSqliteLogStore } from '../../src/node/audit/log-stores.js';
import { SegmentLog } from '../../src/node/audit/segment-log.js';
import { CHURN_FEATURES } from './bodies.js';
import { benchDatabase } from './harness.js';

/** GET /audit?model=churn&limit=100: the route's own query (summaries, newest first). */
const newest = (d: 'sqlite' | 'postgres') =>
  auditSearchSql({ model: 'churn', limit: 100, include_io: false }, d);

const N = Number(process.env.BENCH_RECORDS ?? 50_000);
const BATCH = 1000;

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const perRecord = (ms: number, n = N) => `${((ms / n) * 1000).toFixed(2)} µs`;
const ticksOf = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10; // ms
};

// Records as /predict makes them for churn: 7 features in, label and two probabilities out.
const t0 = Date.now();
const records: AuditRecord[] = Array.from({ length: N }, (_, i) => ({
  request_id: crypto.randomUUID(),
  time: t0 + i,
  route: '/predict',
  model: 'churn',
  model_version: '2',
  model_sha256: 'c'.repeat(64),
  input: {
    float_input: {
      type: 'float32',
      dims: [1, 7],
      data: Float32Array.from({ length: 7 }, () => Math.random() * 100),
    },
  },
  output: {
    label: { type: 'int64', dims: [1], data: BigInt64Array.of(BigInt(i & 1)) },
    probabilities: { type: 'float32', dims: [1, 2], data: Float32Array.of(Math.random(), Math.random()) },
  },
  rows: 1,
  latency_ms: 1.234,
  cache: null,
  status: 200,
  client_id: null,
  api_key: null,
}));
/** The same record as the request path used to hand it over: its JSON, features by name. */
const asJson = (r: AuditRecord) => {
  const x = r.input.float_input!.data as Float32Array;
  const p = r.output.probabilities!.data as Float32Array;
  return JSON.stringify({
    id: crypto.randomUUID(),
    request_id: r.request_id,
    time: new Date(r.time).toISOString(),
    route: r.route,
    model: r.model,
    model_version: r.model_version,
    model_sha256: r.model_sha256,
    input: Object.fromEntries(CHURN_FEATURES.map((f, k) => [f, x[k]])),
    output: {
      prediction: 0,
      label: 'stays',
      probability: p[1],
      probabilities: { stays: p[0], churns: p[1] },
    },
    rows: 1,
    latency_ms: r.latency_ms,
    cache: null,
    status: 200,
    client_id: null,
    api_key: null,
  });
};

/** The audit table as it was before the log (jsonb inputs), and its insert: for the before figures. */
const BEFORE_DDL = `CREATE TABLE before_audit (id uuid PRIMARY KEY, request_id text NOT NULL, time timestamptz NOT NULL,
    route text NOT NULL, model text NOT NULL, model_version text NOT NULL, model_sha256 text NOT NULL, input jsonb NOT NULL,
    output jsonb NOT NULL, rows integer NOT NULL, latency_ms double precision NOT NULL, cache text, status smallint NOT NULL,
    client_id text, api_key text);
    CREATE INDEX ON before_audit (time); CREATE INDEX ON before_audit (model, model_version, time); CREATE INDEX ON before_audit (request_id);`;
const insert = `INSERT INTO before_audit SELECT * FROM jsonb_populate_recordset(NULL::before_audit, $1::jsonb) ON CONFLICT (id) DO NOTHING`;

console.log(`${N} records, batches of ${BATCH}`);

// --- capture: alternated three times each (the first passes also pay for compiling the code)
{
  const binary = (): number => {
    const w = new AuditChunkWriter();
    const c = cpuMs();
    for (let i = 0; i < N; i++) {
      w.write(records[i]!);
      if (w.bytes >= 256 * 1024) w.take();
    }
    return cpuMs() - c;
  };
  const json = (): number => {
    const c = cpuMs();
    for (let i = 0; i < N; i++) asJson(records[i]!);
    return cpuMs() - c;
  };
  const b: number[] = [];
  const j: number[] = [];
  for (let k = 0; k < 3; k++) {
    b.push(binary());
    j.push(json());
  }
  const passes = (xs: number[]) => xs.map((x) => perRecord(x)).join(', ');
  console.log(
    `capture, binary (now):    ${perRecord(Math.min(...b))} cpu/record on the request path (passes: ${passes(b)})`,
  );
  console.log(
    `capture, JSON (before):   ${perRecord(Math.min(...j))} cpu/record on the request path (passes: ${passes(j)})`,
  );
}

// --- log: append and read back
const chunks: Uint8Array[] = [];
{
  const w = new AuditChunkWriter();
  for (let i = 0; i < N; i++) {
    w.write(records[i]!);
    if (w.count === 100) {
      const { buffer, bytes } = w.take();
      chunks.push(new Uint8Array(buffer, 0, bytes));
    }
  }
  if (w.count > 0) {
    const { buffer, bytes } = w.take();
    chunks.push(new Uint8Array(buffer, 0, bytes));
  }
}
const log = new SegmentLog(mkdtempSync(join(tmpdir(), 'bench-log-')), {
  segmentBytes: 64 * 1024 * 1024,
  maxBytes: 4 * 1024 * 1024 * 1024,
});
{
  const c = cpuMs();
  for (const chunk of chunks) log.append(chunk);
  console.log(`log append:               ${perRecord(cpuMs() - c)} cpu/record (chunks of 100)`);
}
const batches: Uint8Array[][] = [];
{
  const c = cpuMs();
  let pos = log.start;
  for (;;) {
    const b = log.read(pos, BATCH, 8 * 1024 * 1024);
    if (b.payloads.length === 0) break;
    batches.push(b.payloads);
    pos = b.next;
  }
  console.log(`log read back:            ${perRecord(cpuMs() - c)} cpu/record`);
}
const requestIdOf = (i: number) => records[i]!.request_id;

async function timed(label: string, fn: () => Promise<number>) {
  const started = performance.now();
  const n = await fn();
  console.log(`  ${label}: ${(performance.now() - started).toFixed(1)} ms (${n} rows)`);
}

// --- SQLite
{
  const path = join(mkdtempSync(join(tmpdir(), 'bench-sqlite-')), 'a.sqlite');
  const store = createSqliteLogStore({ path });
  await store.connect();
  const c = cpuMs();
  for (const [i, b] of batches.entries()) await store.write(b, { segment: 1, offset: i }, 'bench');
  console.log(`SQLite (now):             ${perRecord(cpuMs() - c)} cpu/record`);
  await store.close();
  const db = new Database(path, { readonly: true });
  await timed(
    'SQLite by request id',
    async () =>
      db.prepare(`SELECT id FROM ${AUDIT_TABLE} WHERE request_id = ?`).all(requestIdOf(N - 5)).length,
  );
  await timed(
    'SQLite newest 100 of a model',
    async () =>
      db
        .prepare(newest('sqlite').sql)
        .all(Object.fromEntries(newest('sqlite').params.map((v, i) => [i + 1, v]))).length,
  );
  db.close();
}

// --- Postgres
{
  const url = await benchDatabase('bench_audit_stores');
  const store = createPgLogStore({ url, timeoutMs: 30_000 });
  await store.connect();
  await store.write(batches[0]!, { segment: 1, offset: 0 }, 'bench'); // partition made, connection warm
  const probe = new pg.Client({ connectionString: url });
  await probe.connect();
  // The writer's backend: the one connection from the store that is not ours.
  const pid = Number(
    (
      await probe.query(
        `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() LIMIT 1`,
      )
    ).rows[0].pid,
  );
  const b0 = ticksOf(pid);
  const c = cpuMs();
  for (const [i, b] of batches.slice(1).entries())
    await store.write(b, { segment: 1, offset: i + 1 }, 'bench');
  const n = N - batches[0]!.length;
  console.log(
    `Postgres COPY binary (now): ${perRecord(cpuMs() - c, n)} writer + ${perRecord(ticksOf(pid) - b0, n)} postgres backend, cpu/record`,
  );
  await timed(
    'by request id',
    async () =>
      (await probe.query(`SELECT id FROM ${AUDIT_TABLE} WHERE request_id = $1`, [requestIdOf(N - 5)]))
        .rowCount ?? 0,
  );
  await timed(
    'newest 100 of a model',
    async () => (await probe.query(newest('postgres').sql, newest('postgres').params)).rowCount ?? 0,
  );
  await store.close();

  // Before: the JSON records inserted as one jsonb document per batch.
  await probe.query(BEFORE_DDL);
  const json = records.map(asJson);
  const p0 = ticksOf(Number((await probe.query('SELECT pg_backend_pid() AS p')).rows[0].p));
  const c2 = cpuMs();
  for (let i = 0; i < N; i += BATCH) await probe.query(insert, [`[${json.slice(i, i + BATCH).join(',')}]`]);
  const p1 = ticksOf(Number((await probe.query('SELECT pg_backend_pid() AS p')).rows[0].p));
  console.log(
    `Postgres jsonb (before):  ${perRecord(cpuMs() - c2)} client + ${perRecord(p1 - p0)} postgres backend, cpu/record`,
  );
  await probe.end();
}

// --- PGlite: as it was (jsonb), and with the new schema through COPY binary
{
  const db = await PGlite.create(join(mkdtempSync(join(tmpdir(), 'bench-pglite-')), 'db'));
  await db.exec(BEFORE_DDL);
  const json = records.map(asJson);
  let c = cpuMs();
  for (let i = 0; i < N; i += BATCH) await db.query(insert, [`[${json.slice(i, i + BATCH).join(',')}]`]);
  console.log(`PGlite jsonb (before):    ${perRecord(cpuMs() - c)} cpu/record`);
  await db.exec(PG_SCHEMA_SQL);
  for (const day of new Set(records.map((r) => dayOf(r.time)))) await db.exec(partitionSql(day));
  c = cpuMs();
  for (const b of batches) {
    await db.query(`COPY ${AUDIT_TABLE} (${AUDIT_COLUMNS.join(', ')}) FROM '/dev/blob' (FORMAT binary)`, [], {
      blob: new Blob([copyBinary(b)]),
    });
  }
  console.log(`PGlite COPY binary:       ${perRecord(cpuMs() - c)} cpu/record`);
  await timed(
    'PGlite by request id',
    async () =>
      (await db.query(`SELECT id FROM ${AUDIT_TABLE} WHERE request_id = $1`, [requestIdOf(N - 5)])).rows
        .length,
  );
  await db.close();
}

// --- the segment log alone: a lookup is a scan
await timed('segment log alone, by request id (a scan)', async () => {
  let found = 0;
  let pos = log.start;
  const wanted = requestIdOf(N - 5);
  for (;;) {
    const b = log.read(pos, BATCH, 8 * 1024 * 1024);
    if (b.payloads.length === 0) break;
    for (const p of b.payloads) if (decodeRecord(p).request_id === wanted) found++;
    pos = b.next;
  }
  return found;
});
log.close();
