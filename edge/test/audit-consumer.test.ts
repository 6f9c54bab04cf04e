/**
 * The audit queue's consumer inside workerd: it writes to the machine's Postgres through the Hyperdrive
 * binding's local connection string (wrangler.jsonc), and reads records spilled to R2 (AUDIT_SPILL).
 */
import { createExecutionContext, createMessageBatch, env, getQueueResult } from 'cloudflare:test';
import { afterAll, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/core/index.js';
import { consumeAuditBatch } from '../src/audit-consumer.js';
import { createQueueAuditSink, type SpillPointer } from '../src/audit-queue.js';
import worker, { type Env } from '../src/index.js';

const testEnv = env as unknown as Env;
const written: string[] = [];

async function postgres() {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: testEnv.HYPERDRIVE!.connectionString });
  client.on('error', () => {});
  await client.connect();
  return client;
}

afterAll(async () => {
  if (written.length === 0) return;
  const db = await postgres();
  await db.query('DELETE FROM prediction_audit WHERE id = ANY($1::uuid[])', [written]);
  await db.end();
});

/** A record; `kept` ones are deleted from Postgres after the tests. */
function record(input: unknown, requestId: string, kept = true): AuditRecord {
  const id = crypto.randomUUID();
  if (kept) written.push(id);
  return {
    id,
    request_id: requestId,
    time: new Date().toISOString(),
    route: '/predict/batch',
    model: 'fraud',
    model_version: '1',
    model_sha256: 'cd'.repeat(32),
    input,
    output: [{ label: 0, probability: 0.125 }],
    rows: 1,
    latency_ms: 2,
    cache: null,
    status: 200,
    client_id: 'edge-test',
    api_key: 'edge-key',
  };
}

/** What the producer puts on the queue for these records (the spill bucket is the real binding). */
async function produce(records: AuditRecord[]): Promise<string[]> {
  const bodies: string[] = [];
  const sink = createQueueAuditSink(
    { sendBatch: async (ms) => void bodies.push(...[...ms].map((m) => m.body)) },
    { spill: testEnv.AUDIT_SPILL },
  );
  for (const r of records) sink.record(r);
  await sink.flush();
  expect(bodies).toHaveLength(records.length);
  return bodies;
}

const batchOf = <T>(bodies: T[]) =>
  createMessageBatch<T>(
    'onnx-serve-audit',
    bodies.map((body, i) => ({ id: `m${i}`, timestamp: new Date(), attempts: 1, body })),
  );

const pointerIn = (bodies: string[]) =>
  bodies.map((b) => JSON.parse(b) as SpillPointer).find((b) => 'audit_spill' in b)!;

it('asks for a retry when there is no database to write to', async () => {
  const body = JSON.stringify({ id: crypto.randomUUID(), request_id: 'r' });
  const batch = batchOf([body]);
  const ctx = createExecutionContext();
  await worker.queue(batch, { ...testEnv, HYPERDRIVE: undefined }, ctx);
  expect((await getQueueResult(batch, ctx)).retryBatch.retry).toBe(true);
});

it('writes inline and spilled records to Postgres, then deletes the spilled object', async () => {
  const big = record({ instances: Array.from({ length: 20_000 }, (_, i) => [i, i / 3, 'é€😀']) }, 'spilled');
  const small = record([1, 2, 3], 'inline');
  const old = record([4, 5], 'object-body'); // as earlier versions sent it: the record itself
  const bodies = await produce([big, small]);
  const pointer = pointerIn(bodies);
  expect(pointer.id).toBe(big.id);
  expect(await testEnv.AUDIT_SPILL!.head(pointer.audit_spill)).not.toBeNull();

  const batch = batchOf<string | AuditRecord>([...bodies, old]);
  const ctx = createExecutionContext();
  await worker.queue(batch, testEnv, ctx);
  const result = await getQueueResult(batch, ctx);
  expect(result.retryMessages).toEqual([]);
  expect(result.retryBatch.retry).toBe(false);
  expect(result.explicitAcks.sort()).toEqual(['m0', 'm1', 'm2']);

  const db = await postgres();
  const rows = (
    await db.query('SELECT id, request_id, input FROM prediction_audit WHERE id = ANY($1::uuid[])', [
      [big.id, small.id, old.id],
    ])
  ).rows;
  await db.end();
  const byRequest = Object.fromEntries(rows.map((r) => [r.request_id, r]));
  expect(Object.keys(byRequest).sort()).toEqual(['inline', 'object-body', 'spilled']);
  expect(byRequest.spilled.input).toEqual(big.input);
  expect(byRequest.inline.input).toEqual(small.input);
  expect(await testEnv.AUDIT_SPILL!.head(pointer.audit_spill)).toBeNull();
});

it('keeps the spilled object and retries when Postgres cannot be reached', async () => {
  const big = record({ blob: 'q'.repeat(200_000) }, 'unreachable', false);
  const bodies = await produce([big]);
  const pointer = pointerIn(bodies);
  const batch = batchOf(bodies);
  const ctx = createExecutionContext();
  await consumeAuditBatch(batch, 'postgresql://postgres:local@127.0.0.1:1/test', testEnv.AUDIT_SPILL);
  const result = await getQueueResult(batch, ctx);
  expect(result.retryBatch.retry).toBe(true);
  expect(result.explicitAcks).toEqual([]);
  expect(await testEnv.AUDIT_SPILL!.head(pointer.audit_spill)).not.toBeNull();
});

it('keeps the spilled object and retries when Postgres refuses the insert', async () => {
  const big = record({ blob: 'w'.repeat(200_000) }, 'refused', false);
  const bad = { ...record([1], 'bad-id', false), id: 'not-a-uuid' }; // Postgres refuses the statement
  const bodies = await produce([big]);
  const pointer = pointerIn(bodies);
  const batch = batchOf([...bodies, JSON.stringify(bad)]);
  const ctx = createExecutionContext();
  await worker.queue(batch, testEnv, ctx);
  const result = await getQueueResult(batch, ctx);
  expect(result.explicitAcks).toEqual([]);
  expect(result.retryMessages.map((m: { msgId: string }) => m.msgId).sort()).toEqual(['m0', 'm1']);
  expect(await testEnv.AUDIT_SPILL!.head(pointer.audit_spill)).not.toBeNull();
});

it('acknowledges a pointer whose object is gone (written by an earlier delivery), and writes the rest', async () => {
  const small = record([7], 'beside-missing');
  const missing: SpillPointer = {
    audit_spill: 'audit-spill/2026-01-01/gone.json',
    id: crypto.randomUUID(),
    bytes: 1,
  };
  const bodies = await produce([small]);
  const batch = batchOf([JSON.stringify(missing), ...bodies]);
  const ctx = createExecutionContext();
  await worker.queue(batch, testEnv, ctx);
  const result = await getQueueResult(batch, ctx);
  expect(result.retryMessages).toEqual([]);
  expect(result.explicitAcks.sort()).toEqual(['m0', 'm1']);
  const db = await postgres();
  const n = (await db.query('SELECT count(*)::int AS n FROM prediction_audit WHERE id = $1', [small.id]))
    .rows[0].n;
  await db.end();
  expect(n).toBe(1);
});
