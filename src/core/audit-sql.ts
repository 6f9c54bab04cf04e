import type { AuditQuery } from './audit.js';

/** The audit table: the same SQL for Postgres, the embedded PGlite store, and the edge's queue consumer. */
export const AUDIT_TABLE = 'prediction_audit';

export const SCHEMA_SQL = `
CREATE TABLE IF NOT EXISTS ${AUDIT_TABLE} (
  id            uuid PRIMARY KEY,
  request_id    text NOT NULL,
  time          timestamptz NOT NULL,
  route         text NOT NULL,
  model         text NOT NULL,
  model_version text NOT NULL,
  model_sha256  text NOT NULL,
  input         jsonb NOT NULL,
  output        jsonb NOT NULL,
  rows          integer NOT NULL,
  latency_ms    double precision NOT NULL,
  cache         text,
  status        smallint NOT NULL,
  client_id     text
);
-- Added with API keys: the name of the key a request presented (tables made before it gain the column).
ALTER TABLE ${AUDIT_TABLE} ADD COLUMN IF NOT EXISTS api_key text;
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_time_idx ON ${AUDIT_TABLE} (time);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_model_idx ON ${AUDIT_TABLE} (model, model_version, time);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_request_idx ON ${AUDIT_TABLE} (request_id);
`;

/**
 * Insert a JSON array of records in one statement. Replays are idempotent: a record already written (same
 * id) is skipped, so a flush retried after a crash never duplicates.
 */
export const INSERT_SQL = `
INSERT INTO ${AUDIT_TABLE}
SELECT * FROM jsonb_populate_recordset(NULL::${AUDIT_TABLE}, $1::jsonb)
ON CONFLICT (id) DO NOTHING`;

const SUMMARY_COLUMNS =
  'id, request_id, time, route, model, model_version, model_sha256, rows, latency_ms, cache, status, client_id, api_key';

/** Most bytes of inputs and outputs one search answers with (`include_io`). */
export const AUDIT_READ_MAX_BYTES = 16 * 1024 * 1024;

/** One record by id, whole. */
export const AUDIT_BY_ID_SQL = `SELECT * FROM ${AUDIT_TABLE} WHERE id = $1`;

/**
 * A search, newest first, every filter a parameter (the indexes serve request id, and model and version
 * over time). Without `include_io` the summary columns only: inputs may be megabytes each.
 */
export function auditSearchSql(q: AuditQuery): { sql: string; params: unknown[] } {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (clause: (n: string) => string, value: unknown) => {
    params.push(value);
    where.push(clause(`$${params.length}`));
  };
  if (q.request_id !== undefined) add((n) => `request_id = ${n}`, q.request_id);
  if (q.model !== undefined) add((n) => `model = ${n}`, q.model);
  if (q.version !== undefined) add((n) => `model_version = ${n}`, q.version);
  if (q.since !== undefined) add((n) => `time >= ${n}::timestamptz`, q.since);
  if (q.until !== undefined) add((n) => `time < ${n}::timestamptz`, q.until);
  params.push(q.limit);
  const limit = `$${params.length}`;
  const filter = where.length > 0 ? `WHERE ${where.join(' AND ')}` : '';
  if (!q.include_io) {
    return {
      sql: `SELECT ${SUMMARY_COLUMNS} FROM ${AUDIT_TABLE} ${filter} ORDER BY time DESC, id LIMIT ${limit}`,
      params,
    };
  }
  // With inputs and outputs, records stop once they add up to AUDIT_READ_MAX_BYTES (the one that crosses it
  // included, so a search always answers at least one): a record may hold megabytes.
  params.push(AUDIT_READ_MAX_BYTES);
  const size = 'octet_length(input::text) + octet_length(output::text)';
  return {
    sql: `SELECT * FROM (
      SELECT *, count(*) OVER () AS matches,
        sum(${size}) OVER (ORDER BY time DESC, id ROWS UNBOUNDED PRECEDING) - (${size}) AS bytes_before
      FROM ${AUDIT_TABLE} ${filter} ORDER BY time DESC, id LIMIT ${limit}
    ) page WHERE bytes_before < $${params.length} ORDER BY time DESC, id`,
    params,
  };
}

/**
 * Whether a failed insert was refused for its data (SQLSTATE classes 22 data exception, 23 integrity, 54
 * program limit, e.g. a jsonb too large) rather than because the store is unreachable: such a batch will
 * fail every retry, so its records are isolated instead of spooled.
 */
export const isDataError = (err: unknown): boolean => {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' && /^(22|23|54)/.test(code);
};

export interface AuditStore {
  readonly kind: 'postgres' | 'pglite';
  /** Create the schema; throws when the store cannot be reached. */
  init(): Promise<void>;
  /** Insert records given as a JSON array text; returns how many were new. */
  insert(jsonArray: string): Promise<number>;
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}
