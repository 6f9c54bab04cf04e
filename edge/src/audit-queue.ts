/**
 * Audit on the edge: records are batched per isolate and sent to a Cloudflare Queue after the response, with
 * `ctx.waitUntil`. A queue rather than a database connection per isolate: a send is one short call that
 * the platform retries, the consumer writes to Postgres (through Hyperdrive) in large batches, and a
 * database outage leaves records in the queue instead of in a short-lived isolate.
 *
 * A record carries the request's whole input and output, so a /predict/batch record can be megabytes while
 * a queue message cannot. Cloudflare Queues' limits (developers.cloudflare.com/queues/platform/limits/, read
 * 2026-11): a message is at most 128 KB; a sendBatch at most 100 messages and 256 KB in total; 1 KB is 1000
 * bytes, and up to ~100 bytes of internal metadata per message count towards both. So:
 * - each record goes as text (content type `text`): its binary form (src/core/audit-codec.ts, the same as
 *   Node's segment log) in base64, so the bytes measured here are the bytes sent;
 * - a record whose text passes MESSAGE_BODY_MAX goes to the R2 bucket bound as AUDIT_SPILL, and the queue
 *   gets a small pointer to it (the consumer reads it back, writes it, then deletes it); without a bucket it
 *   is dropped, counted and logged;
 * - batches are cut by count and by bytes, each message counted with PER_MESSAGE_OVERHEAD on top of its body;
 * - a failed send or spill fails only its own records: they are retried at later flushes with a backoff,
 *   up to `maxAttempts` times, then dropped (counted, logged); the other batches go regardless;
 * - what waits is bounded by records and bytes: past either bound the oldest are dropped (counted, logged),
 *   so an isolate does not grow while the queue is down.
 */
import { type AuditRecord, type AuditSink, encodeRecord, toBase64, uuidText } from '../../src/core/index.js';

/** The platform's figures, as documented (bytes: 1 KB = 1000). */
export const QUEUE_LIMITS = {
  messageBytes: 128_000,
  batchMessages: 100,
  batchBytes: 256_000,
  metadataBytes: 100,
};
/** A record's text up to this goes on the queue itself: 1 KB under the limit covers the metadata. */
export const MESSAGE_BODY_MAX = QUEUE_LIMITS.messageBytes - 1_000;
/** Counted for every message in a batch, on top of its body: twice the documented metadata. */
export const PER_MESSAGE_OVERHEAD = 2 * QUEUE_LIMITS.metadataBytes;
/** A batch's bodies plus their overhead stay under this: 6 KB of margin under the limit. */
export const BATCH_BYTES_MAX = QUEUE_LIMITS.batchBytes - 6_000;

/** What the queue carries for a record kept in R2. */
export interface SpillPointer {
  audit_spill: string;
  id: string;
  bytes: number;
}

export interface QueueLike {
  sendBatch(messages: Iterable<{ body: string; contentType: 'text' }>): Promise<unknown>;
}
export type SpillBucket = Pick<R2Bucket, 'put' | 'delete'>;

export interface QueueAuditOptions {
  /** Where records too large for a message go (the AUDIT_SPILL binding); without it they are dropped. */
  spill?: SpillBucket;
  /** Records waiting in this isolate, at most (default 10,000). */
  maxPendingRecords?: number;
  /** Bytes of records' text waiting in this isolate, at most (default 16 MB). */
  maxPendingBytes?: number;
  /** Sends (or spills) a record gets before it is dropped (default 6). */
  maxAttempts?: number;
  /** The wait before retry n is `retryBaseMs · 2^(n-1)`, at most `retryMaxMs` (defaults 1 s, 30 s). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  now?: () => number;
  log?: (message: string, detail: Record<string, unknown>) => void;
}

export type DropReason = 'oversize' | 'failed' | 'overflow';

interface Entry {
  /** Order of recording: the oldest go first when the backlog is over its bounds. */
  seq: number;
  id: string;
  time: number;
  /** What goes on the queue: the record's binary form as base64, or once it is in R2, the pointer's JSON. */
  text: string;
  bytes: number;
  /** Set once the record is in R2. */
  spillKey?: string;
  attempts: number;
  retryAt: number;
  /** Set when a send failed: the entries of a failed chunk are retried together, and with nothing else. */
  chunk?: number;
}

/** UTF-8 length of a string, without encoding it. */
export function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 2; // a pair: 4 bytes for 2 code units
      i++;
    } else n += 2; // 3 bytes (a lone surrogate becomes U+FFFD)
  }
  return n;
}

/** Where a record too large for a message is kept: by day, so a lifecycle rule can expire leftovers. */
export const spillKey = (r: { id: string; time: number }) =>
  `audit-spill/${new Date(r.time).toISOString().slice(0, 10)}/${encodeURIComponent(r.id)}.b64`;

/**
 * A record as the queue carries it: its binary form (audit-codec.ts, the segment log's payload, its id
 * assigned here) as base64 text, so the bytes measured are the bytes sent and the consumer reads the same
 * form Node's log writer does.
 */
export function queueText(r: AuditRecord): { id: string; text: string } {
  const payload = encodeRecord(r, crypto.getRandomValues(new Uint8Array(10)));
  return { id: uuidText(payload.subarray(20, 36)), text: toBase64(payload) };
}

/** Consecutive runs of entries that fit one sendBatch, by count and by bytes. */
export function chunkForQueue<T extends { bytes: number }>(entries: readonly T[]): T[][] {
  const chunks: T[][] = [];
  let chunk: T[] = [];
  let bytes = 0;
  for (const e of entries) {
    const size = e.bytes + PER_MESSAGE_OVERHEAD;
    if (chunk.length > 0 && (chunk.length >= QUEUE_LIMITS.batchMessages || bytes + size > BATCH_BYTES_MAX)) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(e);
    bytes += size;
  }
  if (chunk.length > 0) chunks.push(chunk);
  return chunks;
}

const defaultLog = (message: string, detail: Record<string, unknown>) => console.error(message, detail);

export function createQueueAuditSink(queue: QueueLike | undefined, options: QueueAuditOptions = {}) {
  const {
    spill,
    maxPendingRecords = 10_000,
    maxPendingBytes = 16 * 1024 * 1024,
    maxAttempts = 6,
    retryBaseMs = 1_000,
    retryMaxMs = 30_000,
    now = Date.now,
    log = defaultLog,
  } = options;
  /** Records as recorded: measured at the next flush, off the request's path. */
  let fresh: AuditRecord[] = [];
  /** Measured, waiting to be sent (oldest first). In-flight entries are in neither list. */
  let pending: Entry[] = [];
  let pendingBytes = 0;
  let sent = 0;
  let spilled = 0;
  const dropped: Record<DropReason, number> = { oversize: 0, failed: 0, overflow: 0 };
  /** Dropped for overflow since the last log line (logged once per flush, not once per record). */
  let overflowUnlogged = 0;
  /** R2 objects whose pointer was dropped before it was sent: deleted at the next flush. */
  let orphans: string[] = [];
  let chunkIds = 0;
  let seq = 0;

  const drop = (reason: DropReason, entries: readonly { id: string; spillKey?: string }[], detail = {}) => {
    if (entries.length === 0) return;
    dropped[reason] += entries.length;
    for (const e of entries) if (e.spillKey) orphans.push(e.spillKey);
    if (reason === 'overflow') overflowUnlogged += entries.length;
    else
      log(`audit: dropped ${entries.length} record(s): ${reason}`, {
        reason,
        count: entries.length,
        ids: entries.slice(0, 5).map((e) => e.id),
        ...detail,
      });
  };

  /** Oldest first, until both bounds hold (fresh records count towards the record bound). */
  const trim = () => {
    const out: Entry[] = [];
    while (
      pending.length > 0 &&
      (pending.length + fresh.length > maxPendingRecords || pendingBytes > maxPendingBytes)
    ) {
      const e = pending.shift()!;
      pendingBytes -= e.bytes;
      out.push(e);
    }
    drop('overflow', out);
    if (fresh.length > maxPendingRecords) {
      drop(
        'overflow',
        fresh.splice(0, fresh.length - maxPendingRecords).map((r) => ({ id: r.request_id })),
      );
    }
  };

  const measure = () => {
    const records = fresh;
    fresh = [];
    for (const r of records) {
      const { id, text } = queueText(r);
      const bytes = text.length; // base64: one byte per character
      if (bytes > MESSAGE_BODY_MAX && !spill) drop('oversize', [{ id }], { bytes, limit: MESSAGE_BODY_MAX });
      else if (bytes > maxPendingBytes) drop('overflow', [{ id }]);
      else {
        pending.push({ seq: seq++, id, time: r.time, text, bytes, attempts: 0, retryAt: 0 });
        pendingBytes += bytes;
      }
    }
    trim();
  };

  /** Entries that failed: back in line with a backoff, or dropped once out of attempts. */
  const failed = (entries: Entry[], stage: 'send' | 'spill', err: unknown, retry: Entry[]) => {
    const out: Entry[] = [];
    const t = now();
    const chunk = stage === 'send' ? (entries[0]!.chunk ?? ++chunkIds) : undefined;
    for (const e of entries) {
      e.chunk = chunk;
      e.attempts++;
      if (e.attempts >= maxAttempts) out.push(e);
      else {
        e.retryAt = t + Math.min(retryMaxMs, retryBaseMs * 2 ** (e.attempts - 1));
        retry.push(e);
      }
    }
    if (out.length < entries.length)
      log(`audit: ${stage} failed for ${entries.length - out.length} record(s), retried later`, {
        stage,
        count: entries.length - out.length,
        error: String(err),
      });
    drop('failed', out, { stage, attempts: maxAttempts, error: String(err) });
  };

  const sink: AuditSink = {
    record(r) {
      if (!queue) return; // nowhere to send: keep nothing
      fresh.push(r);
      if (fresh.length + pending.length > maxPendingRecords) trim();
    },
  };
  return Object.assign(sink, {
    /** Send what this isolate holds; call it through ctx.waitUntil once the response is out. */
    async flush() {
      if (!queue) return;
      measure();
      const t = now();
      const due: Entry[] = [];
      const later: Entry[] = [];
      for (const e of pending) (e.retryAt <= t ? due : later).push(e);
      pending = later;
      pendingBytes = later.reduce((n, e) => n + e.bytes, 0);
      const retry: Entry[] = [];

      const sendable: Entry[] = [];
      for (const e of due) {
        if (e.bytes <= MESSAGE_BODY_MAX) {
          sendable.push(e);
          continue;
        }
        const key = spillKey(e);
        try {
          await spill!.put(key, e.text, {
            httpMetadata: { contentType: 'text/plain' },
            customMetadata: { id: e.id },
          });
        } catch (err) {
          failed([e], 'spill', err, retry);
          continue;
        }
        spilled++;
        const pointer: SpillPointer = { audit_spill: key, id: e.id, bytes: e.bytes };
        e.spillKey = key;
        e.text = JSON.stringify(pointer);
        e.bytes = utf8Length(e.text);
        sendable.push(e);
      }

      // A chunk that failed before goes again as it was, so that records sent since do not share its fate;
      // the rest are chunked afresh. One chunk at a time: one that fails puts only its own records back.
      const retried = new Map<number, Entry[]>();
      const unsent: Entry[] = [];
      for (const e of sendable) {
        if (e.chunk === undefined) unsent.push(e);
        else if (retried.has(e.chunk)) retried.get(e.chunk)!.push(e);
        else retried.set(e.chunk, [e]);
      }
      for (const chunk of [...retried.values(), ...chunkForQueue(unsent)]) {
        try {
          await queue.sendBatch(chunk.map((e) => ({ body: e.text, contentType: 'text' as const })));
          sent += chunk.length;
        } catch (err) {
          failed(chunk, 'send', err, retry);
        }
      }

      if (retry.length > 0) {
        pending = [...retry, ...pending].sort((a, b) => a.seq - b.seq);
        pendingBytes += retry.reduce((n, e) => n + e.bytes, 0);
      }
      trim();
      if (overflowUnlogged > 0) {
        log(`audit: dropped ${overflowUnlogged} record(s): overflow`, {
          reason: 'overflow',
          count: overflowUnlogged,
          maxPendingRecords,
          maxPendingBytes,
        });
        overflowUnlogged = 0;
      }
      if (orphans.length > 0 && spill) {
        const keys = orphans;
        orphans = [];
        await spill.delete(keys).catch(() => {}); // best effort: a lifecycle rule removes what is left
      }
    },
    pending: () => pending.length + fresh.length,
    sent: () => sent,
    stats: () => ({
      pending: pending.length + fresh.length,
      pending_bytes: pendingBytes,
      sent,
      spilled,
      dropped: { ...dropped },
    }),
  });
}

export type QueueAuditSink = ReturnType<typeof createQueueAuditSink>;
