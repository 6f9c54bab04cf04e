/**
 * The audit queue's producer inside workerd: batches within Cloudflare Queues' limits, records too large for
 * a message spilled to R2 (the AUDIT_SPILL binding, simulated by miniflare), a failing batch that holds up
 * nothing else, and a bounded backlog.
 */
import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../src/core/index.js';
import { createQueueAuditSink, type SpillBucket, type SpillPointer, utf8Length } from '../src/audit-queue.js';
import type { Env } from '../src/index.js';

const testEnv = env as unknown as Env;

// Cloudflare's documented limits (developers.cloudflare.com/queues/platform/limits/), written out here
// rather than imported, so that a wrong constant in the code fails these tests: a message at most 128 KB,
// a sendBatch at most 100 messages and 256 KB, 1 KB = 1000 bytes, ~100 bytes of metadata per message.
const MESSAGE_MAX = 128_000 - 100;
const BATCH_MESSAGES = 100;
const BATCH_MAX = 256_000;
const METADATA = 100;

const bytes = (s: string) => new TextEncoder().encode(s).byteLength;

let seq = 0;
function record(input: unknown = [seq]): AuditRecord {
  seq++;
  return {
    id: crypto.randomUUID(),
    request_id: `req-${seq}`,
    time: new Date().toISOString(),
    route: '/predict/batch',
    model: 'fraud',
    model_version: '1',
    model_sha256: 'ab'.repeat(32),
    input,
    output: [{ label: 1, probability: 0.25 }],
    rows: 1,
    latency_ms: 1.5,
    cache: null,
    status: 200,
    client_id: null,
    api_key: null,
  };
}

/** A queue binding that records each sendBatch; `refuse` decides which calls throw. */
function fakeQueue(refuse: (bodies: string[]) => boolean = () => false) {
  const calls: { bodies: string[]; ok: boolean }[] = [];
  return {
    calls,
    delivered: () => calls.filter((c) => c.ok).flatMap((c) => c.bodies),
    async sendBatch(messages: Iterable<{ body: string; contentType: 'text' }>) {
      const list = [...messages];
      for (const m of list) expect(m.contentType).toBe('text');
      const bodies = list.map((m) => m.body);
      const ok = !refuse(bodies);
      calls.push({ bodies, ok });
      if (!ok) throw new Error('Queue sendBatch failed: refused');
    },
  };
}

const idOf = (body: string) => (JSON.parse(body) as { id: string }).id;

function logs() {
  const lines: { message: string; detail: Record<string, unknown> }[] = [];
  return {
    lines,
    log: (message: string, detail: Record<string, unknown>) => lines.push({ message, detail }),
  };
}

describe('audit queue: message and batch limits', () => {
  it('utf8Length counts what TextEncoder writes', () => {
    for (const s of ['', 'abc', 'é', '€', '😀', 'a😀b€é\u0000', '\ud800', 'x\udc00y', '€'.repeat(1000)]) {
      expect(utf8Length(s), JSON.stringify(s)).toBe(bytes(s));
    }
  });

  it('sends tiny, ~100 KB and ~1 MB records in batches within count and byte limits; spills the large ones to R2', async () => {
    const queue = fakeQueue();
    const { log, lines } = logs();
    const sink = createQueueAuditSink(queue, { spill: testEnv.AUDIT_SPILL, log });
    const records: AuditRecord[] = [];
    const add = (r: AuditRecord) => {
      records.push(r);
      sink.record(r);
    };
    for (let i = 0; i < 260; i++) {
      add(record([i, i + 0.5]));
      if (i % 20 === 0) add(record({ blob: 'x'.repeat(100_000) })); // ~100 KB: one message each
      if (i % 40 === 0) add(record({ blob: '€'.repeat(40_000) })); // 40k characters, 120 KB of UTF-8
      if (i % 50 === 0) add(record({ blob: '€'.repeat(45_000) })); // 45k characters, 135 KB of UTF-8: spilled
      if (i % 65 === 0) add(record({ blob: 'y'.repeat(1_000_000) })); // ~1 MB: spilled
    }
    await sink.flush();

    expect(sink.stats().dropped).toEqual({ oversize: 0, failed: 0, overflow: 0 });
    expect(sink.pending()).toBe(0);
    expect(lines).toEqual([]);
    expect(queue.calls.every((c) => c.ok)).toBe(true);
    for (const { bodies } of queue.calls) {
      expect(bodies.length).toBeLessThanOrEqual(BATCH_MESSAGES);
      const sizes = bodies.map(bytes);
      for (const s of sizes) expect(s).toBeLessThanOrEqual(MESSAGE_MAX);
      expect(sizes.reduce((sum, s) => sum + s + METADATA, 0)).toBeLessThanOrEqual(BATCH_MAX);
    }
    // Batches are filled, not one message each: 260 tiny records need at least 3 calls, ~120 KB ones go two
    // to a call at most.
    expect(queue.calls.length).toBeGreaterThanOrEqual(3);
    expect(queue.calls.length).toBeLessThan(records.length / 3);

    // Every record arrives once, as itself or as a pointer to an R2 object holding exactly it.
    const byId = new Map(records.map((r) => [r.id, r]));
    const delivered = queue.delivered();
    expect(delivered.map(idOf).sort()).toEqual([...byId.keys()].sort());
    let pointers = 0;
    for (const body of delivered) {
      const parsed = JSON.parse(body) as AuditRecord | SpillPointer;
      if ('audit_spill' in parsed) {
        pointers++;
        const obj = await testEnv.AUDIT_SPILL!.get(parsed.audit_spill);
        expect(obj, parsed.audit_spill).not.toBeNull();
        const text = await obj!.text();
        expect(bytes(text)).toBe(parsed.bytes);
        expect(bytes(text)).toBeGreaterThan(MESSAGE_MAX - 1_000);
        expect(JSON.parse(text)).toEqual(byId.get(parsed.id));
      } else {
        expect(parsed).toEqual(byId.get(parsed.id));
      }
    }
    const large = records.filter((r) => bytes(JSON.stringify(r)) > MESSAGE_MAX);
    expect(large.length).toBe(6 + 4); // the 135 KB and the 1 MB ones
    expect(pointers).toBe(large.length);
    expect(sink.stats().spilled).toBe(large.length);
  });

  it('the same mix through the real queue binding: nothing refused', async () => {
    const sink = createQueueAuditSink(testEnv.AUDIT_QUEUE, { spill: testEnv.AUDIT_SPILL });
    for (let i = 0; i < 120; i++) {
      sink.record(record([i]));
      if (i % 10 === 0) sink.record(record({ blob: '€'.repeat(40_000) }));
      if (i % 30 === 0) sink.record(record({ blob: 'z'.repeat(1_000_000) }));
    }
    const total = sink.pending();
    await sink.flush();
    expect(sink.stats().dropped).toEqual({ oversize: 0, failed: 0, overflow: 0 });
    expect(sink.sent()).toBe(total);
  });

  it('without a spill bucket, an oversize record is dropped, counted and logged, and the rest still go', async () => {
    const queue = fakeQueue();
    const { log, lines } = logs();
    const sink = createQueueAuditSink(queue, { log });
    const big = record({ blob: 'y'.repeat(1_000_000) });
    const small = [record(), record(), record()];
    sink.record(small[0]!);
    sink.record(big);
    sink.record(small[1]!);
    sink.record(small[2]!);
    await sink.flush();
    expect(queue.delivered().map(idOf)).toEqual(small.map((r) => r.id));
    expect(sink.stats().dropped.oversize).toBe(1);
    expect(sink.pending()).toBe(0);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.detail).toMatchObject({ reason: 'oversize', count: 1, ids: [big.id] });
  });
});

describe('audit queue: failures', () => {
  it('a chunk the queue always refuses is retried a bounded number of times, then dropped; later records still go', async () => {
    const poison = record();
    const queue = fakeQueue((bodies) => bodies.some((b) => idOf(b) === poison.id));
    const { log, lines } = logs();
    let clock = 1_000_000;
    const sink = createQueueAuditSink(queue, { log, now: () => clock, maxAttempts: 4 });
    const first = [poison, ...Array.from({ length: 249 }, () => record())];
    for (const r of first) sink.record(r);
    await sink.flush();
    // The chunk with the poison failed; the two chunks after it went in the same flush.
    expect(queue.calls.map((c) => [c.bodies.length, c.ok])).toEqual([
      [100, false],
      [100, true],
      [50, true],
    ]);
    expect(sink.pending()).toBe(100);

    // New records go at once, while the failed chunk waits out its backoff (1 s after the first failure).
    const later: AuditRecord[] = [];
    for (let round = 0; round < 6; round++) {
      const r = record();
      later.push(r);
      sink.record(r);
      clock += 500;
      await sink.flush();
      expect(queue.delivered().map(idOf)).toContain(r.id);
    }
    for (let round = 0; round < 10; round++) {
      clock += 30_000;
      await sink.flush();
    }
    const poisonCalls = queue.calls.filter((c) => c.bodies.some((b) => idOf(b) === poison.id));
    expect(poisonCalls).toHaveLength(4);
    expect(sink.pending()).toBe(0);
    expect(sink.stats().dropped).toEqual({ oversize: 0, failed: 100, overflow: 0 });
    const dropLine = lines.find((l) => l.detail.reason === 'failed');
    expect(dropLine?.detail).toMatchObject({ count: 100, stage: 'send' });
    expect(dropLine?.message).toMatch(/dropped 100/);
    // Everything else arrived.
    const delivered = new Set(queue.delivered().map(idOf));
    for (const r of [...first.slice(100), ...later]) expect(delivered.has(r.id)).toBe(true);
    expect(delivered.has(poison.id)).toBe(false);
  });

  it('a refused chunk is retried as it was: records sent since never join it', async () => {
    const poison = record();
    const queue = fakeQueue((bodies) => bodies.some((b) => idOf(b) === poison.id));
    let clock = 0;
    const sink = createQueueAuditSink(queue, { log: () => {}, now: () => clock, maxAttempts: 5 });
    const first = Array.from({ length: 129 }, () => record());
    for (const r of [...first, poison]) sink.record(r);
    await sink.flush();
    expect(queue.calls.map((c) => [c.bodies.length, c.ok])).toEqual([
      [100, true],
      [30, false],
    ]);
    const failedChunk = queue.calls[1]!.bodies;
    const later: AuditRecord[] = [];
    for (let round = 0; round < 40; round++) {
      const r = record();
      later.push(r);
      sink.record(r);
      clock += 1_000;
      await sink.flush();
      expect(queue.delivered().map(idOf), `round ${round}`).toContain(r.id);
    }
    const poisonCalls = queue.calls.filter((c) => c.bodies.some((b) => idOf(b) === poison.id));
    expect(poisonCalls).toHaveLength(5);
    for (const c of poisonCalls) expect(c.bodies).toEqual(failedChunk);
    expect(sink.stats().dropped.failed).toBe(30);
    expect(sink.pending()).toBe(0);
  });

  it('records in a chunk that failed once are sent on a later flush', async () => {
    let down = true;
    const queue = fakeQueue(() => down);
    let clock = 0;
    const sink = createQueueAuditSink(queue, { now: () => clock, log: () => {} });
    const rs = Array.from({ length: 5 }, () => record());
    for (const r of rs) sink.record(r);
    await sink.flush();
    expect(sink.pending()).toBe(5);
    down = false;
    clock += 1_000;
    await sink.flush();
    expect(queue.delivered().map(idOf)).toEqual(rs.map((r) => r.id));
    expect(sink.pending()).toBe(0);
    expect(sink.stats().dropped.failed).toBe(0);
  });

  it('a spill that fails is retried, then dropped, and holds up nothing else', async () => {
    const queue = fakeQueue();
    const { log, lines } = logs();
    let puts = 0;
    const spill: SpillBucket = {
      put: async () => {
        puts++;
        throw new Error('R2 unavailable');
      },
      delete: async () => {},
    };
    let clock = 0;
    const sink = createQueueAuditSink(queue, { spill, log, now: () => clock, maxAttempts: 3 });
    const big = record({ blob: 'y'.repeat(300_000) });
    const small = record();
    sink.record(big);
    sink.record(small);
    await sink.flush();
    expect(queue.delivered().map(idOf)).toEqual([small.id]);
    for (let i = 0; i < 5; i++) {
      clock += 60_000;
      await sink.flush();
    }
    expect(puts).toBe(3);
    expect(sink.stats().dropped.failed).toBe(1);
    expect(lines.find((l) => l.detail.reason === 'failed')?.detail).toMatchObject({
      stage: 'spill',
      ids: [big.id],
    });
    expect(sink.pending()).toBe(0);
  });

  it('while the queue is down, the backlog is bounded by records and bytes: the oldest go, counted', async () => {
    let down = true;
    const queue = fakeQueue(() => down);
    const { log, lines } = logs();
    let clock = 0;
    const sink = createQueueAuditSink(queue, {
      log,
      now: () => clock,
      maxPendingRecords: 50,
      maxPendingBytes: 1_000_000,
      maxAttempts: 1_000,
    });
    const rs = Array.from({ length: 200 }, () => record());
    for (const r of rs) sink.record(r);
    expect(sink.pending()).toBe(50); // bounded before any flush
    await sink.flush();
    expect(sink.pending()).toBe(50);
    expect(sink.stats().dropped.overflow).toBe(150);
    expect(lines.find((l) => l.detail.reason === 'overflow')?.detail).toMatchObject({ count: 150 });

    // By bytes: ~10 KB records under a 100 KB bound.
    const bySize = createQueueAuditSink(queue, {
      log: () => {},
      now: () => clock,
      maxPendingRecords: 1_000,
      maxPendingBytes: 100_000,
      maxAttempts: 1_000,
    });
    const tens = Array.from({ length: 40 }, () => record({ blob: 'x'.repeat(10_000) }));
    for (const r of tens) {
      bySize.record(r);
      await bySize.flush();
    }
    const { pending, pending_bytes, dropped } = bySize.stats();
    expect(pending_bytes).toBeLessThanOrEqual(100_000);
    expect(pending).toBeLessThanOrEqual(10);
    expect(dropped.overflow).toBe(40 - pending);

    // The queue comes back: what is left are the newest records.
    down = false;
    clock += 60_000;
    await sink.flush();
    await bySize.flush();
    const delivered = queue.delivered().map(idOf);
    expect(delivered.slice(0, 50).sort()).toEqual(
      rs
        .slice(150)
        .map((r) => r.id)
        .sort(),
    );
    expect(delivered.slice(50).sort()).toEqual(
      tens
        .slice(40 - pending)
        .map((r) => r.id)
        .sort(),
    );
    expect(sink.pending() + bySize.pending()).toBe(0);
  });
});
