import type { AuditQuery } from './audit.js';

/**
 * The audit table, one SQL-level schema for Postgres (Node's writer, the edge's queue consumer) and the
 * embedded SQLite store. Inputs and outputs are tensor packs (audit-codec.ts) in `bytea` / BLOB columns:
 * measured against `jsonb` and `real[]` (bench/src/audit-stores.ts, README), the pack is the cheapest to
 * make and to ingest, holds any dtype exactly, and the read routes turn it back into JSON.
 */
export const AUDIT_TABLE = 'prediction_audit';
/** Where each log writer has got to in its segment log: written in the same transaction as the rows. */
export const PROGRESS_TABLE = 'audit_progress';

/** Columns in COPY and INSERT order. */
export const AUDIT_COLUMNS = [
  'id',
  'time',
  'request_id',
  'route',
  'model',
  'model_version',
  'model_sha256',
  'rows',
  'latency_ms',
  'cache',
  'status',
  'client_id',
  'api_key',
  'input',
  'output',
] as const;

/**
 * Postgres: partitioned by day (partitions are made as days are first written, and dropped past the
 * retention); ids are UUIDv7, so the primary key and the time index grow at their ends. A table from before
 * this layout (not partitioned, `jsonb` inputs) is kept as `prediction_audit_legacy`.
 */
export const PG_SCHEMA_SQL = `
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname = '${AUDIT_TABLE}' AND c.relkind = 'r' AND n.nspname = current_schema()) THEN
    ALTER TABLE ${AUDIT_TABLE} RENAME TO ${AUDIT_TABLE}_legacy;
    ALTER INDEX IF EXISTS ${AUDIT_TABLE}_pkey RENAME TO ${AUDIT_TABLE}_legacy_pkey;
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS ${AUDIT_TABLE} (
  id            uuid NOT NULL,
  time          timestamptz NOT NULL,
  request_id    text NOT NULL,
  route         text NOT NULL,
  model         text NOT NULL,
  model_version text NOT NULL,
  model_sha256  text NOT NULL,
  rows          integer NOT NULL,
  latency_ms    real NOT NULL,
  cache         text,
  status        smallint NOT NULL,
  client_id     text,
  api_key       text,
  input         bytea NOT NULL,
  output        bytea NOT NULL,
  PRIMARY KEY (id, time)
) PARTITION BY RANGE (time);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_by_time ON ${AUDIT_TABLE} (time);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_by_model ON ${AUDIT_TABLE} (model, model_version, time);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_by_model_time ON ${AUDIT_TABLE} (model, time);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_by_request ON ${AUDIT_TABLE} (request_id);
CREATE TABLE IF NOT EXISTS ${PROGRESS_TABLE} (
  writer   text PRIMARY KEY,
  segment  bigint NOT NULL,
  "offset" bigint NOT NULL,
  at       timestamptz NOT NULL DEFAULT now()
);
`;

/**
 * SQLite: the same columns; `time` in ms since the epoch, ids as 16 bytes. The rowid is the id's first 64
 * bits (its millisecond and the log writer's counter: unique, and in time order), so the table itself is the
 * index by id and by time: two B-trees fewer to keep up per record than a unique id and a time index, the
 * largest part of this store's cost (bench:audit-stores). Every SQLite index ends in the rowid, so the
 * index on (model) hands `GET /audit?model=` its newest rows in order, and (model, model_version) the same
 * per version: without the first, a page of 100 sorted every row of the model (90 ms at 50,000 rows).
 */
export const SQLITE_SCHEMA_SQL = `
CREATE TABLE IF NOT EXISTS ${AUDIT_TABLE} (
  rowid         INTEGER PRIMARY KEY,
  id            BLOB NOT NULL,
  time          INTEGER NOT NULL,
  request_id    TEXT NOT NULL,
  route         TEXT NOT NULL,
  model         TEXT NOT NULL,
  model_version TEXT NOT NULL,
  model_sha256  TEXT NOT NULL,
  rows          INTEGER NOT NULL,
  latency_ms    REAL NOT NULL,
  cache         TEXT,
  status        INTEGER NOT NULL,
  client_id     TEXT,
  api_key       TEXT,
  input         BLOB NOT NULL,
  output        BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_by_model ON ${AUDIT_TABLE} (model, model_version);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_by_model_time ON ${AUDIT_TABLE} (model);
CREATE INDEX IF NOT EXISTS ${AUDIT_TABLE}_by_request ON ${AUDIT_TABLE} (request_id);
CREATE TABLE IF NOT EXISTS ${PROGRESS_TABLE} (
  writer   TEXT PRIMARY KEY,
  segment  INTEGER NOT NULL,
  "offset" INTEGER NOT NULL,
  at       INTEGER NOT NULL
);
`;

/** The SQLite rowid of a record: its id's first 64 bits (big-endian), as the rowid column holds it. */
export function sqliteRowid(id: Uint8Array): bigint {
  let v = 0n;
  for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(id[i]!);
  return BigInt.asIntN(64, v);
}

/** The lowest rowid of records at or after `ms` (a UUIDv7's first 48 bits are its millisecond). */
export const sqliteRowidAt = (ms: number): bigint => BigInt(Math.max(0, Math.floor(ms))) << 16n;

const DAY_MS = 86_400_000;

/** The UTC day of `ms`, as YYYY-MM-DD. */
export const dayOf = (ms: number) => new Date(Math.floor(ms / DAY_MS) * DAY_MS).toISOString().slice(0, 10);

/** The partition for one UTC day (`YYYY-MM-DD`). */
export function partitionSql(day: string): string {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) throw new Error(`not a day: ${day}`);
  const next = new Date(Date.parse(`${day}T00:00:00Z`) + DAY_MS).toISOString().slice(0, 10);
  return `CREATE TABLE IF NOT EXISTS ${partitionName(day)} PARTITION OF ${AUDIT_TABLE} FOR VALUES FROM ('${day}') TO ('${next}')`;
}

export const partitionName = (day: string) => `${AUDIT_TABLE}_p${day.replaceAll('-', '')}`;

/** The day a partition holds, from its name, or undefined for a table that is not one of ours. */
export function partitionDay(name: string): string | undefined {
  const m = new RegExp(`^${AUDIT_TABLE}_p(\\d{4})(\\d{2})(\\d{2})$`).exec(name);
  return m ? `${m[1]}-${m[2]}-${m[3]}` : undefined;
}

export const PG_PARTITIONS_SQL = `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
  WHERE i.inhparent = '${AUDIT_TABLE}'::regclass`;

const SUMMARY_COLUMNS =
  'id, request_id, time, route, model, model_version, model_sha256, rows, latency_ms, cache, status, client_id, api_key';

/**
 * Most bytes of stored inputs and outputs (tensor packs) one search answers with (`include_io`): rendered as
 * JSON (named features, predictions) a stored byte takes six to eight, so about 16 MB of answer.
 */
export const AUDIT_READ_MAX_BYTES = 2 * 1024 * 1024;

export type Dialect = 'postgres' | 'sqlite';

/**
 * One record by id, whole. Postgres takes the id as text; SQLite its rowid and its 16 bytes (the reader
 * converts: the rowid finds it, the bytes confirm it).
 */
export const auditByIdSql = (d: Dialect) =>
  d === 'postgres'
    ? `SELECT ${selectList(d, true)} FROM ${AUDIT_TABLE} WHERE id = $1::uuid`
    : `SELECT ${selectList(d, true)} FROM ${AUDIT_TABLE} WHERE rowid = ?1 AND id = ?2`;

/**
 * The columns a read returns: `record_id` (text in Postgres, 16 bytes in SQLite) and `time_ms` (ms since the
 * epoch) under names of their own, so that ORDER BY time, id still means the indexed columns.
 */
function selectList(d: Dialect, io: boolean): string {
  const time = d === 'postgres' ? '(extract(epoch from time) * 1000)::float8 AS time_ms' : 'time AS time_ms';
  const id = d === 'postgres' ? 'id::text AS record_id' : 'id AS record_id';
  const cols = SUMMARY_COLUMNS.replace('id, ', '').replace('time, ', '');
  return `${id}, ${time}, ${cols}${io ? ', input, output' : ''}`;
}

/**
 * A search, newest first, every filter a parameter (the indexes serve request id, model and version over
 * time, and time alone). Without `include_io` the summary columns only: inputs may be megabytes each. Times
 * are given in ms since the epoch.
 */
export function auditSearchSql(
  q: Omit<AuditQuery, 'since' | 'until'> & { since?: number; until?: number },
  d: Dialect,
): { sql: string; params: unknown[] } {
  const where: string[] = [];
  const params: unknown[] = [];
  const param = () => (d === 'postgres' ? `$${params.length}` : `?${params.length}`);
  const timeParam = () => (d === 'postgres' ? `to_timestamp(${param()}::float8 / 1000)` : param());
  const add = (clause: (n: string) => string, value: unknown, asTime = false) => {
    params.push(value);
    where.push(clause(asTime ? timeParam() : param()));
  };
  if (q.request_id !== undefined) add((n) => `request_id = ${n}`, q.request_id);
  if (q.model !== undefined) add((n) => `model = ${n}`, q.model);
  if (q.version !== undefined) add((n) => `model_version = ${n}`, q.version);
  // SQLite: its rowid is the time order (see SQLITE_SCHEMA_SQL), so times are rowid ranges.
  if (q.since !== undefined) {
    if (d === 'postgres') add((n) => `time >= ${n}`, q.since, true);
    else add((n) => `rowid >= ${n}`, sqliteRowidAt(q.since));
  }
  if (q.until !== undefined) {
    if (d === 'postgres') add((n) => `time < ${n}`, q.until, true);
    else add((n) => `rowid < ${n}`, sqliteRowidAt(q.until));
  }
  params.push(q.limit);
  const limit = param();
  const filter = where.length > 0 ? `WHERE ${where.join(' AND ')}` : '';
  const order = d === 'postgres' ? 'time DESC, id DESC' : 'rowid DESC';
  if (!q.include_io) {
    return {
      sql: `SELECT ${selectList(d, false)} FROM ${AUDIT_TABLE} ${filter} ORDER BY ${order} LIMIT ${limit}`,
      params,
    };
  }
  // With inputs and outputs, records stop once they add up to AUDIT_READ_MAX_BYTES (the one that crosses it
  // included, so a search always answers at least one): a record may hold megabytes. The page's keys and
  // sizes are found first, from the index, LIMIT rows at most (a count over every match read them all);
  // only the records kept are then read whole. `matches` is how many the page would hold without the bound.
  params.push(AUDIT_READ_MAX_BYTES);
  const bound = param();
  const pg = d === 'postgres';
  const size = pg ? 'octet_length(input) + octet_length(output)' : 'length(input) + length(output)';
  const keys = pg ? 'id AS k_id, time AS k_time' : 'rowid AS k_id';
  const keyOrder = pg ? 'k_time DESC, k_id DESC' : 'k_id DESC';
  const join = pg
    ? `${AUDIT_TABLE}.id = page.k_id AND ${AUDIT_TABLE}.time = page.k_time`
    : `${AUDIT_TABLE}.rowid = page.k_id`;
  return {
    sql: `SELECT ${selectList(d, true)}, page.matches, page.bytes_before FROM (
      SELECT *, count(*) OVER () AS matches,
        sum(size) OVER (ORDER BY ${keyOrder} ROWS UNBOUNDED PRECEDING) - size AS bytes_before
      FROM (SELECT ${keys}, ${size} AS size FROM ${AUDIT_TABLE} ${filter} ORDER BY ${order} LIMIT ${limit}) lim
    ) page JOIN ${AUDIT_TABLE} ON ${join} WHERE page.bytes_before < ${bound} ORDER BY ${keyOrder}`,
    params,
  };
}

/**
 * Whether a failed write was refused for its data rather than because the store is unreachable: Postgres
 * SQLSTATE classes 22 (data exception), 23 (integrity), 54 (program limit); SQLite's too big, constraint
 * and mismatch errors. Such a batch fails every retry, so its records are isolated instead of retried.
 */
export const isDataError = (err: unknown): boolean => {
  const code = (err as { code?: unknown })?.code;
  return (
    typeof code === 'string' &&
    (/^(22|23|54)/.test(code) || /^SQLITE_(TOOBIG|CONSTRAINT|MISMATCH)/.test(code))
  );
};

/** Queries on the audit store from the main thread (reads, and the lifecycle's stage history). */
export interface AuditStore {
  readonly kind: 'postgres' | 'sqlite';
  /** `sql` in this store's dialect: `$1`… for Postgres, `?1`… for SQLite. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}
