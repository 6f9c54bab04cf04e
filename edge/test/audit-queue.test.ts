/**
 * The audit queue's producer inside workerd: batches within Cloudflare Queues' limits, records too large for
 * a message spilled to R2 (the AUDIT_SPILL binding, simulated by miniflare), a failing batch that holds up
 * nothing else, and a bounded backlog.
 */
import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { type AuditRecord, decodeRecord, decodeTensorPack, fromBase64 } from '../../src/core/index.js';
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
/** A record whose input holds `values` float32 numbers (4 bytes each before base64: its size). */
function record(values = 2): AuditRecord {
  seq++;
  return {
    request_id: `req-${seq}`,
    time: Date.now(),
    route: '/predict/batch',
    model: 'fraud',
    model_version: '1',
    model_sha256: 'ab'.repeat(32),
    input: {
      float_input: {
        type: 'float32',
        dims: [1, values],
        data: Float32Array.from({ length: values }, (_, i) => seq + i / 8),
      },
    },
    output: { probabilities: { type: 'float32', dims: [1, 2], data: Float32Array.of(0.75, 0.25) } },
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

/** The request id of the record a message carries (a record is base64; a pointer, JSON). */
const idOf = (body: string) =>
  body.startsWith('{')
    ? `pointer ${(JSON.parse(body) as SpillPointer).id}`
    : decodeRecord(fromBase64(body)).request_id;

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
    // Base64 makes 4 characters of every 3 bytes: 20,000 values (~107 KB) fit a message, 30,000 (~160 KB)
    // and 250,000 (~1.3 MB) do not.
    const large = new Set<string>();
    for (let i = 0; i < 260; i++) {
      add(record(2));
      if (i % 20 === 0) add(record(20_000));
      if (i % 50 === 0) {
        add(record(30_000));
        large.add(records.at(-1)!.request_id);
      }
      if (i % 65 === 0) {
        add(record(250_000));
        large.add(records.at(-1)!.request_id);
      }
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
    // Batches are filled, not one message each: 260 tiny records need at least 3 calls, ~107 KB ones go two
    // to a call at most.
    expect(queue.calls.length).toBeGreaterThanOrEqual(3);
    expect(queue.calls.length).toBeLessThan(records.length / 3);

    // Every record arrives once, as itself or as a pointer to an R2 object holding exactly it.
    const byRequest = new Map(records.map((r) => [r.request_id, r]));
    const arrived: string[] = [];
    const same = (text: string) => {
      const got = decodeRecord(fromBase64(text));
      const sent = byRequest.get(got.request_id)!;
      expect(got).toMatchObject({ model: sent.model, rows: sent.rows, time: sent.time });
      expect([...(decodeTensorPack(got.input)[0]!.data as Float32Array)]).toEqual([
        ...(sent.input.float_input!.data as Float32Array),
      ]);
      arrived.push(got.request_id);
      return got;
    };
    let pointers = 0;
    for (const body of queue.delivered()) {
      if (body.startsWith('{')) {
        const pointer = JSON.parse(body) as SpillPointer;
        pointers++;
        const obj = await testEnv.AUDIT_SPILL!.get(pointer.audit_spill);
        expect(obj, pointer.audit_spill).not.toBeNull();
        const text = await obj!.text();
        expect(bytes(text)).toBe(pointer.bytes);
        expect(bytes(text)).toBeGreaterThan(MESSAGE_MAX - 1_000);
        const got = same(text);
        expect(got.id).toBe(pointer.id);
        expect(large.has(got.request_id)).toBe(true);
      } else same(body);
    }
    expect(arrived.sort()).toEqual([...byRequest.keys()].sort());
    expect(large.size).toBe(6 + 4);
    expect(pointers).toBe(large.size);
    expect(sink.stats().spilled).toBe(large.size);
  });

  it('the same mix through the real queue binding: nothing refused', async () => {
    const sink = createQueueAuditSink(testEnv.AUDIT_QUEUE, { spill: testEnv.AUDIT_SPILL });
    for (let i = 0; i < 120; i++) {
      sink.record(record(2));
      if (i % 10 === 0) sink.record(record(20_000));
      if (i % 30 === 0) sink.record(record(250_000));
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
    const big = record(250_000);
    const small = [record(), record(), record()];
    sink.record(small[0]!);
    sink.record(big);
    sink.record(small[1]!);
    sink.record(small[2]!);
    await sink.flush();
    expect(queue.delivered().map(idOf)).toEqual(small.map((r) => r.request_id));
    expect(sink.stats().dropped.oversize).toBe(1);
    expect(sink.pending()).toBe(0);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.detail).toMatchObject({ reason: 'oversize', count: 1 });
    expect(lines[0]!.detail.ids).toHaveLength(1);
  });
});

describe('audit queue: failures', () => {
  it('a chunk the queue always refuses is retried a bounded number of times, then dropped; later records still go', async () => {
    const poison = record();
    const queue = fakeQueue((bodies) => bodies.some((b) => idOf(b) === poison.request_id));
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
      expect(queue.delivered().map(idOf)).toContain(r.request_id);
    }
    for (let round = 0; round < 10; round++) {
      clock += 30_000;
      await sink.flush();
    }
    const poisonCalls = queue.calls.filter((c) => c.bodies.some((b) => idOf(b) === poison.request_id));
    expect(poisonCalls).toHaveLength(4);
    expect(sink.pending()).toBe(0);
    expect(sink.stats().dropped).toEqual({ oversize: 0, failed: 100, overflow: 0 });
    const dropLine = lines.find((l) => l.detail.reason === 'failed');
    expect(dropLine?.detail).toMatchObject({ count: 100, stage: 'send' });
    expect(dropLine?.message).toMatch(/dropped 100/);
    // Everything else arrived.
    const delivered = new Set(queue.delivered().map(idOf));
    for (const r of [...first.slice(100), ...later]) expect(delivered.has(r.request_id)).toBe(true);
    expect(delivered.has(poison.request_id)).toBe(false);
  });

  it('a refused chunk is retried as it was: records sent since never join it', async () => {
    const poison = record();
    const queue = fakeQueue((bodies) => bodies.some((b) => idOf(b) === poison.request_id));
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
      expect(queue.delivered().map(idOf), `round ${round}`).toContain(r.request_id);
    }
    const poisonCalls = queue.calls.filter((c) => c.bodies.some((b) => idOf(b) === poison.request_id));
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
    expect(queue.delivered().map(idOf)).toEqual(rs.map((r) => r.request_id));
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
    const big = record(75_000);
    const small = record();
    sink.record(big);
    sink.record(small);
    await sink.flush();
    expect(queue.delivered().map(idOf)).toEqual([small.request_id]);
    for (let i = 0; i < 5; i++) {
      clock += 60_000;
      await sink.flush();
    }
    expect(puts).toBe(3);
    expect(sink.stats().dropped.failed).toBe(1);
    const spillDrop = lines.find((l) => l.detail.reason === 'failed')?.detail;
    expect(spillDrop).toMatchObject({ stage: 'spill', count: 1 });
    expect(spillDrop?.ids).toHaveLength(1);
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
    const tens = Array.from({ length: 40 }, () => record(1_800)); // ~10 KB of base64 each
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
        .map((r) => r.request_id)
        .sort(),
    );
    expect(delivered.slice(50).sort()).toEqual(
      tens
        .slice(40 - pending)
        .map((r) => r.request_id)
        .sort(),
    );
    expect(sink.pending() + bySize.pending()).toBe(0);
  });
});
