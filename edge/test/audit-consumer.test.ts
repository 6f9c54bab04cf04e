/** The audit queue's consumer inside workerd, without a database: it must ask for the batch again. */
import { createExecutionContext, createMessageBatch, env, getQueueResult } from 'cloudflare:test';
import { expect, it } from 'vitest';
import type { AuditRecord } from '../../src/core/index.js';
import worker, { type Env } from '../src/index.js';

it('asks for a retry when there is no database to write to', async () => {
  const body = { id: crypto.randomUUID(), request_id: 'r' } as AuditRecord;
  const batch = createMessageBatch<AuditRecord>('onnx-serve-audit', [
    { id: 'x', timestamp: new Date(), attempts: 1, body },
  ]);
  const ctx = createExecutionContext();
  await worker.queue(batch, { ...(env as unknown as Env), HYPERDRIVE: undefined }, ctx);
  expect((await getQueueResult(batch, ctx)).retryBatch.retry).toBe(true);
});
