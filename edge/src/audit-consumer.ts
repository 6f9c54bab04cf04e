/**
 * The consumer of the audit queue: writes each batch of records to Postgres through Hyperdrive (connection
 * pooling close to the database). Inserts skip ids already written, so a batch the platform delivers twice
 * (after a failure) is not written twice. On failure the messages are retried; past the consumer's
 * max_retries the platform moves them to the dead-letter queue (wrangler.jsonc), from which they can be
 * replayed (README, *Cloudflare Workers*).
 *
 * A message is a record's JSON text, or a pointer to a record the producer kept in R2 (AUDIT_SPILL) because
 * it was too large for a message (audit-queue.ts); messages sent as objects by earlier versions are taken
 * as they are. A spilled record is read back, written, and only then deleted from R2. Records go to
 * Postgres in statements of at most INSERT_BYTES of JSON, so that a batch of spilled megabyte records is
 * not all held in memory at once.
 */
import { type AuditRecord, INSERT_SQL, SCHEMA_SQL, toAuditJson } from '../../src/core/index.js';
import type { SpillPointer } from './audit-queue.js';

export type AuditMessageBody = string | AuditRecord;
export type SpillReader = Pick<R2Bucket, 'get' | 'delete'>;

const INSERT_BYTES = 8 * 1024 * 1024;
const RETRY = { delaySeconds: 5 };

let schemaReady = false;

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
      await client.query(SCHEMA_SQL);
      schemaReady = true;
    }
  } catch (err) {
    console.error('audit consumer: cannot reach Postgres', String(err));
    batch.retryAll(RETRY);
    await client.end().catch(() => {});
    return;
  }

  let group: { message: Message<AuditMessageBody>; record: AuditRecord; spillKey?: string }[] = [];
  let groupBytes = 0;
  /** Writes the group; false when Postgres refused it (the group and everything after it is retried). */
  const write = async (): Promise<boolean> => {
    if (group.length === 0) return true;
    const done = group;
    group = [];
    groupBytes = 0;
    try {
      await client.query(INSERT_SQL, [toAuditJson(done.map((g) => g.record))]);
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
      let bytes = 0;
      if (typeof body === 'string') {
        bytes = body.length;
        try {
          body = JSON.parse(body);
        } catch {
          console.error('audit consumer: message is not JSON, retried (then dead-lettered)', message.id);
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
        let text: string;
        try {
          const obj = await spill.get(key);
          if (!obj) {
            // Written and deleted by an earlier delivery of this message, or expired: nothing to write.
            console.error('audit consumer: spilled record not found (already written, or expired)', key);
            message.ack();
            continue;
          }
          text = await obj.text();
          body = JSON.parse(text);
        } catch (err) {
          console.error('audit consumer: spill read failed, retried', { key, error: String(err) });
          message.retry(RETRY);
          continue;
        }
        bytes = text.length;
      }
      if (groupBytes > 0 && groupBytes + bytes > INSERT_BYTES && !(await write())) {
        for (const m of messages.slice(i)) m.retry(RETRY);
        return;
      }
      group.push({ message, record: body as AuditRecord, spillKey: key });
      groupBytes += bytes;
    }
    await write();
  } finally {
    await client.end().catch(() => {});
  }
}
