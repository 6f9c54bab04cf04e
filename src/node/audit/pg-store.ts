import pg from 'pg';
import { type AuditStore, INSERT_SQL, SCHEMA_SQL } from '../../core/audit-sql.js';

export function createPgStore(opts: {
  url: string;
  poolSize?: number;
  /** Most ms a call may take, measured here: a database that accepts bytes and never answers is down. */
  timeoutMs?: number;
}): AuditStore {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const connect = (max: number) => {
    const pool = new pg.Pool({
      connectionString: opts.url,
      max,
      connectionTimeoutMillis: Math.min(2000, timeoutMs),
      // The server's own limit, and the client's: statement_timeout alone cannot fire when the network (or
      // the server) holds the bytes; query_timeout does, and its connection is discarded, not reused.
      statement_timeout: timeoutMs,
      query_timeout: timeoutMs + 1000,
      idleTimeoutMillis: 30_000,
    });
    // A dropped idle connection is reported here; the next query gets a fresh one.
    pool.on('error', () => {});
    return pool;
  };
  const pool = connect(opts.poolSize ?? 4);
  // Reads (GET /audit) have connections of their own: a few large searches must not take the writer's.
  const readPool = connect(2);
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
      return (await readPool.query(sql, params)).rows;
    },
    async close() {
      await Promise.all([pool.end(), readPool.end()]);
    },
  };
}
