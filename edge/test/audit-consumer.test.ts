/**
 * The audit queue's consumer inside workerd: it writes to the machine's Postgres through the Hyperdrive
 * binding's local connection string (wrangler.jsonc), and reads records spilled to R2 (AUDIT_SPILL).
 */
import { createExecutionContext, createMessageBatch, env, getQueueResult } from 'cloudflare:test';
import { afterAll, expect, it } from 'vitest';
import { type AuditRecord, decodeRecord, decodeTensorPack, fromBase64 } from '../../src/core/index.js';
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
  await db.query('DELETE FROM prediction_audit WHERE request_id = ANY($1::text[])', [written]);
  await db.end();
});

/** A record of `values` float32 inputs; `kept` ones are deleted from Postgres after the tests. */
function record(values: number, requestId: string, kept = true): AuditRecord {
  const id = `${requestId}-${crypto.randomUUID()}`;
  if (kept) written.push(id);
  return {
    request_id: id,
    time: Date.now(),
    route: '/predict/batch',
    model: 'fraud',
    model_version: '1',
    model_sha256: 'cd'.repeat(32),
    input: {
      float_input: {
        type: 'float32',
        dims: [1, values],
        data: Float32Array.from({ length: values }, (_, i) => i / 3),
      },
    },
    output: { probabilities: { type: 'float32', dims: [1, 2], data: Float32Array.of(0.875, 0.125) } },
    rows: 1,
    latency_ms: 2,
    cache: null,
    status: 200,
    client_id: 'edge-test',
    api_key: 'edge-key',
  };
}

/** A record's JSON as versions before the binary form sent it (an object body, or its text). */
function legacy(requestId: string) {
  const id = crypto.randomUUID();
  written.push(requestId);
  return {
    id,
    request_id: requestId,
    time: new Date().toISOString(),
    route: '/predict',
    model: 'fraud',
    model_version: '1',
    model_sha256: 'cd'.repeat(32),
    input: [4, 5],
    output: { prediction: 1, probability: 0.5 },
    rows: 1,
    latency_ms: 2,
    cache: null,
    status: 200,
    client_id: null,
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
  bodies.filter((b) => b.startsWith('{')).map((b) => JSON.parse(b) as SpillPointer)[0]!;

it('asks for a retry when there is no database to write to', async () => {
  const body = JSON.stringify({ id: crypto.randomUUID(), request_id: 'r' });
  const batch = batchOf([body]);
  const ctx = createExecutionContext();
  await worker.queue(batch, { ...testEnv, HYPERDRIVE: undefined }, ctx);
  expect((await getQueueResult(batch, ctx)).retryBatch.retry).toBe(true);
});

it("writes inline, spilled and earlier versions' JSON records to Postgres, then deletes the spilled object", async () => {
  const big = record(40_000, 'spilled');
  const small = record(3, 'inline');
  const oldObject = legacy(`object-body-${crypto.randomUUID()}`); // as earlier versions sent it: the record
  const oldText = legacy(`text-body-${crypto.randomUUID()}`);
  const bodies = await produce([big, small]);
  const pointer = pointerIn(bodies);
  const spilled = decodeRecord(
    fromBase64(await (await testEnv.AUDIT_SPILL!.get(pointer.audit_spill))!.text()),
  );
  expect(spilled.request_id).toBe(big.request_id);
  expect(pointer.id).toBe(spilled.id);

  const batch = batchOf<unknown>([...bodies, oldObject, JSON.stringify(oldText)]);
  const ctx = createExecutionContext();
  await worker.queue(batch as never, testEnv, ctx);
  const result = await getQueueResult(batch as never, ctx);
  expect(result.retryMessages).toEqual([]);
  expect(result.retryBatch.retry).toBe(false);
  expect(result.explicitAcks.sort()).toEqual(['m0', 'm1', 'm2', 'm3']);

  const db = await postgres();
  const rows = (
    await db.query(
      'SELECT id::text AS id, request_id, input, output FROM prediction_audit WHERE request_id = ANY($1::text[])',
      [[big.request_id, small.request_id, oldObject.request_id, oldText.request_id]],
    )
  ).rows;
  await db.end();
  const byRequest = Object.fromEntries(rows.map((r) => [r.request_id, r]));
  expect(Object.keys(byRequest).sort()).toEqual(
    [big.request_id, small.request_id, oldObject.request_id, oldText.request_id].sort(),
  );
  const values = (r: { input: Uint8Array }) => [...(decodeTensorPack(r.input)[0]!.data as Float32Array)];
  expect(values(byRequest[big.request_id])).toEqual([...(big.input.float_input!.data as Float32Array)]);
  expect(values(byRequest[small.request_id])).toEqual([...(small.input.float_input!.data as Float32Array)]);
  expect(byRequest[big.request_id].id).toBe(spilled.id);
  // An earlier version's record keeps its id, and its input and output as the JSON they were.
  expect(byRequest[oldObject.request_id].id).toBe(oldObject.id);
  const json = (pack: Uint8Array) =>
    JSON.parse(new TextDecoder().decode(decodeTensorPack(pack)[0]!.data as Uint8Array));
  expect(json(byRequest[oldText.request_id].input)).toEqual([4, 5]);
  expect(json(byRequest[oldText.request_id].output)).toEqual({ prediction: 1, probability: 0.5 });
  expect(await testEnv.AUDIT_SPILL!.head(pointer.audit_spill)).toBeNull();
});

it('keeps the spilled object and retries when Postgres cannot be reached', async () => {
  const big = record(50_000, 'unreachable', false);
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
  const big = record(50_000, 'refused', false);
  const bad = { ...legacy('bad-id'), id: 'not-a-uuid' }; // Postgres refuses the statement
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
  const small = record(1, 'beside-missing');
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
  const n = (
    await db.query('SELECT count(*)::int AS n FROM prediction_audit WHERE request_id = $1', [
      small.request_id,
    ])
  ).rows[0].n;
  await db.end();
  expect(n).toBe(1);
});
