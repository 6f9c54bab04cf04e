/**
 * Audit on the edge: records are batched per isolate and sent to a Cloudflare Queue after the response, with
 * `ctx.waitUntil`. A queue rather than a database connection per isolate: a send is one short call that
 * the platform retries, the consumer writes to Postgres (through Hyperdrive) in large batches, and a
 * database outage leaves records in the queue instead of in a short-lived isolate.
 */
import type { AuditRecord, AuditSink } from '../../src/core/index.js';

export interface QueueLike {
  sendBatch(messages: Iterable<{ body: AuditRecord }>): Promise<unknown>;
}

export function createQueueAuditSink(queue: QueueLike | undefined) {
  let pending: AuditRecord[] = [];
  let sent = 0;
  const sink: AuditSink = {
    record(r) {
      pending.push(r);
    },
  };
  return Object.assign(sink, {
    /** Send what this isolate holds; call it through ctx.waitUntil once the response is out. */
    async flush() {
      if (!queue || pending.length === 0) return;
      const batch = pending;
      pending = [];
      // Queues take at most 100 messages per sendBatch.
      for (let i = 0; i < batch.length; i += 100) {
        try {
          await queue.sendBatch(batch.slice(i, i + 100).map((body) => ({ body })));
          sent += Math.min(100, batch.length - i);
        } catch {
          pending.push(...batch.slice(i)); // kept for the next flush
          return;
        }
      }
    },
    pending: () => pending.length,
    sent: () => sent,
  });
}
