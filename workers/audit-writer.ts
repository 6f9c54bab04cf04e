/**
 * The audit log writer thread. Chunks of records arrive from the request path (transferred, never copied)
 * and are appended to the segment log at once, before anything else; then, off that log, batches go to the
 * store (Postgres or SQLite) with the log position in the same transaction. A store that is down, hangs or
 * refuses never loses a record (it waits in the log, on disk) and never holds one in memory; a record the
 * store refuses for its data is set aside in the dead letter file and the rest goes on.
 */
import { appendFileSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { decodeRecord } from '../src/core/audit-codec.js';
import { isDataError } from '../src/core/audit-sql.js';
import { createPgLogStore, createSqliteLogStore, type LogStore } from '../src/node/audit/log-stores.js';
import { type Position, type ReadBatch, SegmentLog } from '../src/node/audit/segment-log.js';
import type { AuditWriterInit, FromWriter, ToWriter } from './audit-protocol.js';

const init = workerData as AuditWriterInit;
const port = parentPort!;
const post = (m: FromWriter) => port.postMessage(m);
const log = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) =>
  post({ op: 'log', level, msg, fields });

const segments = new SegmentLog(init.logDir, { segmentBytes: init.segmentBytes, maxBytes: init.maxLogBytes });
const store: LogStore =
  init.store.kind === 'postgres'
    ? createPgLogStore({ url: init.store.url, timeoutMs: init.store.timeoutMs })
    : createSqliteLogStore({ path: init.store.path });

let connected = false;
let everConnected = false;
let position: Position | undefined;
let backlog = 0;
let takenBytes = 0;
let written = 0;
let failed = 0;
let deadLettered = 0;
let lastError: string | null = null;
let batchSeconds: number[] = [];
let closing: { deadline: number } | undefined;
/**
 * When the oldest record not yet in the store was appended (performance.now()), while new records gather
 * into a batch for up to flushMs; -Infinity for records found in the log at start, or left over after a
 * batch (they have waited already): those go at once.
 */
let oldestPendingAt: number | undefined;
/** Wakes the store loop: new records, or close. */
let wake: (() => void) | undefined;
const nudge = () => {
  const w = wake;
  wake = undefined;
  w?.();
};
const sleep = (ms: number) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, Math.max(0, ms));
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });

let statusDirty = true;
const status = () => {
  statusDirty = false;
  const s = batchSeconds;
  batchSeconds = [];
  post({
    op: 'status',
    connected,
    store: store.kind,
    backlog,
    logBytes: segments.bytes,
    takenBytes,
    written,
    failed,
    deadLettered,
    dropped: { ...segments.dropped },
    batchSeconds: s,
    lastError,
  });
};
const statusTimer = setInterval(() => {
  if (statusDirty || batchSeconds.length > 0) status();
}, 100);
const fsyncTimer = setInterval(() => segments.sync(), init.fsyncMs);

let lastDropLog = 0;
// Until the store says where this log got to, everything on disk is the backlog (at most one segment's
// records already written are counted again).
backlog = segments.countFrom(segments.start);
if (segments.dropped.torn > 0) {
  log('warn', 'audit log: a torn record at the end of the log (a write cut short) was cut off', {
    dir: init.logDir,
  });
}

port.on('message', (m: ToWriter) => {
  if (m.op === 'chunk') {
    takenBytes += m.bytes;
    const before = { ...segments.dropped };
    const appended = segments.append(new Uint8Array(m.buffer, 0, m.bytes));
    if (appended > 0 && backlog === 0) oldestPendingAt ??= performance.now();
    backlog += appended;
    if (appended < m.count) {
      const reason =
        segments.dropped.disk_full > before.disk_full ? 'disk full' : 'log over AUDIT_LOG_MAX_BYTES';
      // Said at most once a second: a full disk would otherwise log every chunk.
      if (performance.now() - lastDropLog > 1000) {
        lastDropLog = performance.now();
        log('error', 'audit records dropped', {
          reason,
          rows: m.count - appended,
          dropped_total: segments.dropped.disk_full + segments.dropped.log_full,
        });
      }
    }
    statusDirty = true;
    nudge();
  } else if (m.op === 'close') {
    // Everything taken is on disk before anything else: a store call that hangs past the deadline ends
    // with this thread terminated, and what it held must not depend on it.
    segments.sync();
    closing = { deadline: m.deadline };
    nudge();
  }
});

/** Set a refused record aside, with the store's reason, and move the position past it. */
async function deadLetter(payload: Uint8Array, to: Position, reason: string) {
  const r = decodeRecord(payload);
  const line = JSON.stringify({
    time: new Date().toISOString(),
    reason,
    record: {
      ...r,
      time: new Date(r.time).toISOString(),
      input: Buffer.from(r.input).toString('base64'),
      output: Buffer.from(r.output).toString('base64'),
    },
  });
  appendFileSync(init.deadLetterPath, `${line}\n`);
  await store.skip(to, init.writer);
  deadLettered++;
  log('warn', 'audit record refused by the store: set aside', { reason, dead_letter: init.deadLetterPath });
}

/** Write records; on a data error, halve until the refused ones are found, write the rest. */
async function write(payloads: Uint8Array[], ends: Position[]): Promise<void> {
  const started = performance.now();
  try {
    await store.write(payloads, ends[ends.length - 1]!, init.writer);
  } catch (err) {
    if (!isDataError(err)) throw err;
    if (payloads.length === 1) {
      await deadLetter(payloads[0]!, ends[0]!, String((err as Error).message));
      return;
    }
    const half = payloads.length >> 1;
    await write(payloads.slice(0, half), ends.slice(0, half));
    await write(payloads.slice(half), ends.slice(half));
    return;
  }
  written += payloads.length;
  batchSeconds.push((performance.now() - started) / 1000);
}

async function connect(): Promise<boolean> {
  try {
    await store.connect();
    const saved = await store.progress(init.writer);
    position = saved ?? segments.start;
    backlog = segments.countFrom(position);
    oldestPendingAt = backlog > 0 ? Number.NEGATIVE_INFINITY : undefined;
    connected = true;
    everConnected = true;
    lastError = null;
    statusDirty = true;
    log('info', 'audit store available', { store: store.kind, backlog });
    return true;
  } catch (err) {
    down(err);
    return false;
  }
}

function down(err: unknown) {
  const error = String((err as Error)?.message ?? err);
  if (connected)
    log('warn', 'audit store unavailable: records wait in the log', { store: store.kind, error });
  else if (!everConnected && lastError === null) {
    log('warn', 'audit store unreachable at start: records wait in the log until it answers', {
      store: store.kind,
      error,
    });
  }
  connected = false;
  lastError = error;
  statusDirty = true;
}

let lastRetention = 0;
async function retain() {
  if (init.retentionDays <= 0 || Date.now() - lastRetention < 3_600_000) return;
  lastRetention = Date.now();
  const dropped = await store.retain(init.retentionDays);
  if (dropped > 0) log('info', 'audit records past retention dropped', { days: init.retentionDays, dropped });
}

const pastDeadline = () => closing !== undefined && Date.now() >= closing.deadline;

/** Batches from the log to the store, for as long as the thread runs (or until the close deadline). */
async function storeLoop() {
  for (;;) {
    if (closing && (pastDeadline() || backlog === 0)) return;
    if (!connected) {
      if (!(await connect())) {
        // Closing with the store down: its records are safe in the log (fsynced below); waiting out the
        // outage would only hold the shutdown.
        if (closing) return;
        await sleep(init.retryMs);
        continue;
      }
    }
    if (backlog === 0) {
      await sleep(closing ? 0 : init.flushMs);
      continue;
    }
    // Gather a full batch, or wait until the oldest record has waited flushMs (not while closing).
    if (!closing && backlog < init.batchRows) {
      const left = init.flushMs - (performance.now() - (oldestPendingAt ?? performance.now()));
      if (left > 0) {
        await sleep(left);
        continue;
      }
    }
    let batch: ReadBatch;
    try {
      batch = segments.read(position!, init.batchRows, init.batchBytes);
    } catch (err) {
      log('error', 'audit log could not be read', { error: String(err) });
      await sleep(init.retryMs);
      continue;
    }
    if (batch.payloads.length === 0) {
      // Nothing readable from here (the rest was torn): the position moves on.
      position = batch.next;
      backlog = segments.countFrom(position);
      continue;
    }
    try {
      await write(batch.payloads, batch.ends);
      position = batch.next;
      backlog = Math.max(0, backlog - batch.payloads.length);
      oldestPendingAt = backlog > 0 ? Number.NEGATIVE_INFINITY : undefined;
      segments.release(position);
      statusDirty = true;
      await retain();
    } catch (err) {
      failed += batch.payloads.length;
      down(err);
      if (closing) return;
      await sleep(init.retryMs);
    }
  }
}

await storeLoop();
// Closing: everything taken is in the log, fsynced; what the store did not take is replayed at next start.
clearInterval(statusTimer);
clearInterval(fsyncTimer);
segments.close();
await Promise.race([store.close().catch(() => {}), new Promise((r) => setTimeout(r, 500))]);
status();
post({ op: 'closed', backlog });
port.close();
