/**
 * The consumer of the audit queue: writes each batch of records to Postgres through Hyperdrive (connection
 * pooling close to the database), into the same partitioned table as Node's log writer (src/core/
 * audit-sql.ts). Inserts skip ids already written, so a batch the platform delivers twice (after a failure)
 * is not written twice. On failure the messages are retried; past the consumer's max_retries the platform
 * moves them to the dead-letter queue (wrangler.jsonc), from which they can be replayed (README,
 * *Cloudflare Workers*).
 *
 * A message is a record's binary form in base64 (audit-queue.ts), or a pointer to one the producer kept in
 * R2 (AUDIT_SPILL) because it was too large for a message; a record's JSON (text, or an object), as earlier
 * versions sent it, is written too, its input and output kept as JSON. A spilled record is read back,
 * written, and only then deleted from R2. Records go to Postgres in statements of at most INSERT_BYTES, so
 * that a batch of spilled megabyte records is not all held in memory at once.
 */
import {
  AUDIT_COLUMNS,
  AUDIT_TABLE,
  type DecodedRecord,
  dayOf,
  decodeRecord,
  fromBase64,
  jsonPack,
  PG_SCHEMA_SQL,
  partitionSql,
} from '../../src/core/index.js';
import type { SpillPointer } from './audit-queue.js';

/** A record's JSON, as versions before the binary form sent it. */
interface LegacyRecord {
  id: string;
  request_id: string;
  time: string;
  route: string;
  model: string;
  model_version: string;
  model_sha256: string;
  input: unknown;
  output: unknown;
  rows: number;
  latency_ms: number;
  cache: string | null;
  status: number;
  client_id: string | null;
  api_key?: string | null;
}

export type AuditMessageBody = string | LegacyRecord;

const isLegacy = (v: unknown): v is LegacyRecord =>
  typeof v === 'object' && v !== null && typeof (v as LegacyRecord).request_id === 'string';

const fromLegacy = (r: LegacyRecord): DecodedRecord => ({
  id: r.id,
  time: Date.parse(r.time),
  latency_ms: r.latency_ms,
  status: r.status,
  rows: r.rows,
  cache: (r.cache as DecodedRecord['cache']) ?? null,
  request_id: r.request_id,
  route: r.route,
  model: r.model,
  model_version: r.model_version,
  model_sha256: r.model_sha256,
  client_id: r.client_id,
  api_key: r.api_key ?? null,
  input: jsonPack(r.input),
  output: jsonPack(r.output),
});

/** Text Postgres can hold: NUL becomes U+FFFD (a client's request id may carry one). */
const storable = (s: string | null) => (s === null ? null : s.replaceAll('\0', '\uFFFD'));

/** Insert records (arrays of each column, unnested): one statement, ids already written skipped. */
const INSERT_SQL = `INSERT INTO ${AUDIT_TABLE} (${AUDIT_COLUMNS.join(', ')})
SELECT id, to_timestamp(t / 1000.0), request_id, route, model, model_version, model_sha256, rows, latency_ms,
       cache, status, client_id, api_key, input, output
FROM unnest($1::uuid[], $2::float8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[],
            $9::real[], $10::text[], $11::smallint[], $12::text[], $13::text[], $14::bytea[], $15::bytea[])
  AS r(id, t, request_id, route, model, model_version, model_sha256, rows, latency_ms, cache, status,
       client_id, api_key, input, output)
ON CONFLICT (id, time) DO NOTHING`;

function insertParams(records: readonly DecodedRecord[]): unknown[] {
  const col = <T>(f: (r: DecodedRecord) => T) => records.map(f);
  return [
    col((r) => r.id),
    col((r) => r.time),
    col((r) => storable(r.request_id)),
    col((r) => r.route),
    col((r) => r.model),
    col((r) => r.model_version),
    col((r) => r.model_sha256),
    col((r) => r.rows),
    col((r) => r.latency_ms),
    col((r) => r.cache),
    col((r) => r.status),
    col((r) => storable(r.client_id)),
    col((r) => storable(r.api_key)),
    col((r) => r.input),
    col((r) => r.output),
  ];
}

/** A message body's record: the binary form in base64, or a legacy JSON record. */
function recordOf(body: unknown): DecodedRecord {
  if (typeof body === 'string') {
    const t = body.trimStart();
    if (t.startsWith('{')) return recordOf(JSON.parse(t));
    return decodeRecord(fromBase64(t));
  }
  if (isLegacy(body)) return fromLegacy(body);
  throw new Error('not an audit record');
}
export type SpillReader = Pick<R2Bucket, 'get' | 'delete'>;

const INSERT_BYTES = 8 * 1024 * 1024;
const RETRY = { delaySeconds: 5 };

let schemaReady = false;
/** Days whose partition this isolate has made. */
const partitions = new Set<string>();

const isPointer = (v: unknown): v is SpillPointer =>
  typeof v === 'object' && v !== null && typeof (v as SpillPointer).audit_spill === 'string';

export async function consumeAuditBatch(
  batch: MessageBatch<AuditMessageBody>,
  connectionString: string | undefined,
  spill?: SpillReader,
): Promise<void> {
  if (!connectionString) {
    batch.retryAll();
    return;
  }
  // Loaded here, not at the top: only the queue handler needs it.
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString });
  // After end(), the Workers socket reports its own closing as an error; unheard, it would be an unhandled
  // rejection. Errors that matter reject the query or the connect below.
  client.on('error', () => {});
  try {
    await client.connect();
    if (!schemaReady) {
      await client.query(PG_SCHEMA_SQL);
      schemaReady = true;
    }
  } catch (err) {
    console.error('audit consumer: cannot reach Postgres', String(err));
    batch.retryAll(RETRY);
    await client.end().catch(() => {});
    return;
  }

  let group: { message: Message<AuditMessageBody>; record: DecodedRecord; spillKey?: string }[] = [];
  let groupBytes = 0;
  /** Writes the group; false when Postgres refused it (the group and everything after it is retried). */
  const write = async (): Promise<boolean> => {
    if (group.length === 0) return true;
    const done = group;
    group = [];
    groupBytes = 0;
    try {
      for (const day of new Set(done.map((g) => dayOf(g.record.time)))) {
        if (partitions.has(day)) continue;
        await client.query(partitionSql(day)).catch((err) => {
          // Another consumer made it at the same moment.
          if (!['42P07', '23505'].includes((err as { code?: string }).code ?? '')) throw err;
        });
        partitions.add(day);
      }
      await client.query(INSERT_SQL, insertParams(done.map((g) => g.record)));
    } catch (err) {
      console.error('audit consumer: insert failed, retried', { records: done.length, error: String(err) });
      for (const g of done) g.message.retry(RETRY);
      return false;
    }
    const keys = done.flatMap((g) => (g.spillKey ? [g.spillKey] : []));
    if (keys.length > 0 && spill) {
      // Written: the objects can go. One left behind is only storage (a lifecycle rule removes it).
      await spill
        .delete(keys)
        .catch((err) => console.error('audit consumer: spill delete failed', String(err)));
    }
    for (const g of done) g.message.ack();
    return true;
  };

  try {
    const messages = batch.messages;
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]!;
      let body: unknown = message.body;
      let bytes = typeof body === 'string' ? body.length : 0;
      // A pointer is JSON; a record is base64 (or, from earlier versions, JSON).
      if (typeof body === 'string' && body.trimStart().startsWith('{')) {
        try {
          body = JSON.parse(body);
        } catch {
          console.error('audit consumer: message is not a record, retried (then dead-lettered)', message.id);
          message.retry(RETRY);
          continue;
        }
      }
      let key: string | undefined;
      if (isPointer(body)) {
        key = body.audit_spill;
        if (!spill) {
          console.error('audit consumer: spilled record but no AUDIT_SPILL binding, retried', key);
          message.retry(RETRY);
          continue;
        }
        try {
          const obj = await spill.get(key);
          if (!obj) {
            // Written and deleted by an earlier delivery of this message, or expired: nothing to write.
            console.error('audit consumer: spilled record not found (already written, or expired)', key);
            message.ack();
            continue;
          }
          body = await obj.text();
        } catch (err) {
          console.error('audit consumer: spill read failed, retried', { key, error: String(err) });
          message.retry(RETRY);
          continue;
        }
        bytes = (body as string).length;
      }
      let record: DecodedRecord;
      try {
        record = recordOf(body);
      } catch (err) {
        console.error('audit consumer: message is not a record, retried (then dead-lettered)', {
          id: message.id,
          error: String(err),
        });
        message.retry(RETRY);
        continue;
      }
      if (groupBytes > 0 && groupBytes + bytes > INSERT_BYTES && !(await write())) {
        for (const m of messages.slice(i)) m.retry(RETRY);
        return;
      }
      group.push({ message, record, spillKey: key });
      groupBytes += bytes;
    }
    await write();
  } finally {
    await client.end().catch(() => {});
  }
}
