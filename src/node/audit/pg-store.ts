import pg from 'pg';
import { type AuditStore, INSERT_SQL, SCHEMA_SQL } from '../../core/audit-sql.js';

export function createPgStore(opts: {
  url: string;
  poolSize?: number;
  statementTimeoutMs?: number;
}): AuditStore {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolSize ?? 4,
    connectionTimeoutMillis: 2000,
    statement_timeout: opts.statementTimeoutMs ?? 10_000,
    idleTimeoutMillis: 30_000,
  });
  // A dropped idle connection is reported here; the next query gets a fresh one.
  pool.on('error', () => {});
  return {
    kind: 'postgres',
    async init() {
      await pool.query(SCHEMA_SQL);
    },
    async insert(jsonArray) {
      const res = await pool.query(INSERT_SQL, [jsonArray]);
      return res.rowCount ?? 0;
    },
    async query(sql, params) {
      return (await pool.query(sql, params)).rows;
    },
    async close() {
      await pool.end();
    },
  };
}
