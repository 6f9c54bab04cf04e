/**
 * The reads `GET /audit` runs are served by indexes in both stores: the query plans of the route's own SQL,
 * in the real Postgres and in SQLite, sort nothing and scan no table. A page of the newest 100 records of
 * a model sorted every record of that model before the index on (model, time) existed (75–90 ms at 50,000
 * records, `npm run bench:audit-stores`): a table of millions would time out.
 */
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  auditSearchSql,
  dayOf,
  PG_SCHEMA_SQL,
  partitionSql,
  SQLITE_SCHEMA_SQL,
} from '../src/core/audit-sql.js';
import { freshDatabase } from './services.js';

const now = Date.now();
/** The queries users run, as the route builds them (summaries and include_io pages). */
const QUERIES = [
  { name: 'newest of a model', q: { model: 'churn' } },
  { name: 'newest of a model version', q: { model: 'churn', version: '2' } },
  { name: 'a model over a time window', q: { model: 'churn', since: now - 3_600_000, until: now } },
  { name: 'a version over a time window', q: { model: 'churn', version: '2', since: now - 3_600_000 } },
  { name: 'by request id', q: { request_id: 'customer-42' } },
  { name: 'newest of all', q: {} },
  { name: 'a time window', q: { since: now - 3_600_000, until: now } },
];
const cases = QUERIES.flatMap(({ name, q }) =>
  [false, true].map((include_io) => ({
    name: `${name}${include_io ? ', with inputs and outputs' : ''}`,
    q: { ...q, limit: 100, include_io },
  })),
);

describe('SQLite', () => {
  const db = new Database(':memory:');
  db.exec(SQLITE_SCHEMA_SQL);
  afterAll(() => db.close());

  it.each(cases)('$name: no sort, no table scan', ({ q }) => {
    const { sql, params } = auditSearchSql(q, 'sqlite');
    const lines = db
      .prepare(`EXPLAIN QUERY PLAN ${sql}`)
      .all(Object.fromEntries(params.map((v, i) => [i + 1, v])))
      .map((r) => (r as { detail: string }).detail);
    // A page with inputs and outputs may put its own rows (at most `limit`) in order at the end.
    if (q.include_io && /TEMP B-TREE FOR ORDER BY/.test(lines.at(-1)!)) lines.pop();
    const plan = lines.join('\n');
    expect(plan).not.toMatch(/TEMP B-TREE FOR (RIGHT PART OF )?ORDER BY/);
    // A scan of the table in rowid order is an index walk (the rowid is the time order), but not when the
    // query names a model or a request id: then an index on them must be searched.
    if (q.model !== undefined || q.request_id !== undefined) {
      expect(plan).toMatch(/SEARCH prediction_audit USING (COVERING )?INDEX/);
    }
  });
});

describe('Postgres', () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>;
  let client: pg.Client;
  beforeAll(async () => {
    db = await freshDatabase('auditidx');
    client = new pg.Client({ connectionString: db.url });
    await client.connect();
    await client.query(PG_SCHEMA_SQL);
    await client.query(partitionSql(dayOf(now)));
    await client.query(partitionSql(dayOf(now - 86_400_000)));
    // The planner is told what a full sort or a table scan costs nothing to avoid: where the indexes can
    // serve the query it takes them; where they cannot, the plan still sorts or scans and says so.
    await client.query('SET enable_sort = off; SET enable_seqscan = off');
  });
  afterAll(async () => {
    await client?.end();
    await db?.drop();
  });

  it.each(cases)('$name: no full sort, no table scan', async ({ q }) => {
    const { sql, params } = auditSearchSql(q, 'postgres');
    const lines = (await client.query(`EXPLAIN ${sql}`, params)).rows.map((r) => r['QUERY PLAN'] as string);
    // A page with inputs and outputs may put its own rows (at most `limit`) in order at the top.
    if (q.include_io && /^Sort\b/.test(lines[0]!)) lines.shift();
    const plan = lines.join('\n');
    // An incremental sort (ties on time put in id order) reads the index's order; a full sort does not.
    expect(plan).not.toMatch(/(^|-> {2})Sort\b/m);
    expect(plan).not.toMatch(/Seq Scan/);
  });
});
