/**
 * The consumer of the audit queue: writes each batch of records to Postgres in one statement, through
 * Hyperdrive (connection pooling close to the database). Inserts skip ids already written, so a batch the
 * platform delivers twice (after a failure) is not written twice. On failure the batch is retried.
 */
import { type AuditRecord, INSERT_SQL, SCHEMA_SQL, toAuditJson } from '../../src/core/index.js';

let schemaReady = false;

export async function consumeAuditBatch(
  batch: MessageBatch<AuditRecord>,
  connectionString: string | undefined,
): Promise<void> {
  if (!connectionString) {
    batch.retryAll();
    return;
  }
  // Loaded here, not at the top: only the queue handler needs it (and the Workers test pool cannot load
  // pg: node-postgres #3700). wrangler's bundle includes it either way.
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString });
  try {
    await client.connect();
    if (!schemaReady) {
      await client.query(SCHEMA_SQL);
      schemaReady = true;
    }
    await client.query(INSERT_SQL, [toAuditJson(batch.messages.map((m) => m.body))]);
    batch.ackAll();
  } catch {
    batch.retryAll({ delaySeconds: 5 });
  } finally {
    await client.end().catch(() => {});
  }
}
