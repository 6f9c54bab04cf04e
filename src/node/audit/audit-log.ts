/**
 * The audit log, main-thread side. A request's record is written in binary form into the current chunk
 * (audit-codec.ts: a few field writes and a copy of its tensors' bytes; no JSON) and the chunk is handed to
 * the log writer thread (workers/audit-writer.ts) every AUDIT_CAPTURE_MS, or sooner once it is large: the
 * buffer is transferred, not copied. That thread appends it to the segment log at once, then feeds the store
 * from there. Nothing on this thread waits on a disk or a database.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { AuditWriterInit, FromWriter, ToWriter, WriterStatus } from '../../../workers/audit-protocol.js';
import type { AuditReader, AuditRecord, AuditSink } from '../../core/audit.js';
import { AuditChunkWriter } from '../../core/audit-codec.js';
import { type AuditStore, auditByIdSql, auditSearchSql, sqliteRowid } from '../../core/audit-sql.js';
import { compiledWorker } from '../worker-file.js';
import { createAuditReader } from './audit-reader.js';

export type DropReason = 'overflow' | 'disk_full' | 'log_full' | 'torn';

export interface AuditObserver {
  written(rows: number): void;
  /** Seconds one batch took to write. */
  flushed(seconds: number): void;
  failed(rows: number): void;
  deadLettered(rows: number): void;
  /** Records lost, never silently: over the in-flight bound, disk full, log over its bound, torn by a crash. */
  dropped(rows: number, reason: DropReason): void;
}

export interface AuditLogOptions {
  /** AUDIT_DIR: the segment log, the dead letter file and (embedded) the SQLite file live here. */
  dir: string;
  /** Postgres when a URL is given, else the embedded SQLite file. */
  databaseUrl?: string;
  /** Most ms a store call may take before the store counts as unreachable. */
  storeTimeoutMs: number;
  /** Records per store write. */
  batchRows: number;
  /** Most bytes per store write (a record carries its request's tensors). */
  batchBytes: number;
  /** Records reach the store within about this long while it is up. */
  flushMs: number;
  retryMs: number;
  /** Chunks are handed to the log writer at least this often (ms): the bound on what a hard kill loses. */
  captureMs: number;
  /** Most bytes handed to the writer thread and not yet taken; past it records are dropped (counted). */
  maxQueueBytes: number;
  /** Most bytes the segment log holds (records waiting for the store); past it, dropped (counted). */
  maxLogBytes: number;
  segmentBytes: number;
  fsyncMs: number;
  retentionDays: number;
  observer?: AuditObserver;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** Chunks this large go to the writer at once, not at the next capture tick. */
const CHUNK_BYTES = 256 * 1024;

/** This AUDIT_DIR's name in the store's progress table: made once, kept beside the log. */
function writerId(dir: string): string {
  const path = join(dir, 'writer-id');
  if (existsSync(path)) {
    const id = readFileSync(path, 'utf8').trim();
    if (id) return id;
  }
  const id = randomUUID();
  writeFileSync(path, `${id}\n`);
  return id;
}

export function createAuditLog(opts: AuditLogOptions) {
  const { observer, log } = opts;
  mkdirSync(opts.dir, { recursive: true });
  const kind = opts.databaseUrl ? 'postgres' : 'sqlite';
  const sqlitePath = join(opts.dir, 'audit.sqlite');
  const init: AuditWriterInit = {
    logDir: join(opts.dir, 'log'),
    deadLetterPath: join(opts.dir, 'audit-dead-letter.jsonl'),
    store: opts.databaseUrl
      ? { kind: 'postgres', url: opts.databaseUrl, timeoutMs: opts.storeTimeoutMs }
      : { kind: 'sqlite', path: sqlitePath },
    writer: writerId(opts.dir),
    batchRows: opts.batchRows,
    batchBytes: opts.batchBytes,
    flushMs: opts.flushMs,
    retryMs: opts.retryMs,
    segmentBytes: opts.segmentBytes,
    maxLogBytes: opts.maxLogBytes,
    fsyncMs: opts.fsyncMs,
    retentionDays: opts.retentionDays,
  };
  const worker = new Worker(compiledWorker('audit-writer.js'), { workerData: init });
  // Reads (GET /audit, stage history) use connections of their own: never the writer's.
  const store: AuditStore = createAuditReader(
    opts.databaseUrl
      ? { kind: 'postgres', url: opts.databaseUrl, timeoutMs: opts.storeTimeoutMs }
      : { kind: 'sqlite', path: sqlitePath, timeoutMs: opts.storeTimeoutMs },
  );

  const chunk = new AuditChunkWriter();
  let timer: NodeJS.Timeout | undefined;
  let postedBytes = 0;
  let overflow = 0;
  let closed = false;
  let last: WriterStatus | undefined;
  let lastDropLog = 0;
  let resolveReady!: () => void;
  const ready = new Promise<void>((r) => {
    resolveReady = r;
  });
  let resolveClosed: ((backlog: number) => void) | undefined;
  const writerGone = new Promise<void>((resolve) => worker.once('exit', () => resolve()));

  const send = (m: ToWriter, transfer?: ArrayBuffer[]) => worker.postMessage(m, transfer);

  /** Hand the current chunk to the writer thread. */
  const post = () => {
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (chunk.count === 0) return;
    const { buffer, bytes, count } = chunk.take();
    postedBytes += bytes;
    send({ op: 'chunk', buffer, bytes, count }, [buffer]);
  };

  const onStatus = (s: WriterStatus) => {
    const before = last;
    last = s;
    if (s.connected || s.lastError !== null) resolveReady();
    if (!observer) return;
    const delta = (now: number, then: number | undefined) => now - (then ?? 0);
    for (const seconds of s.batchSeconds) observer.flushed(seconds);
    const written = delta(s.written, before?.written);
    if (written > 0) observer.written(written);
    const failed = delta(s.failed, before?.failed);
    if (failed > 0) observer.failed(failed);
    const dead = delta(s.deadLettered, before?.deadLettered);
    if (dead > 0) observer.deadLettered(dead);
    for (const reason of ['disk_full', 'log_full', 'torn'] as const) {
      const n = delta(s.dropped[reason], before?.dropped[reason]);
      if (n > 0) observer.dropped(n, reason);
    }
  };

  worker.on('message', (m: FromWriter) => {
    if (m.op === 'status') onStatus(m);
    else if (m.op === 'log') log?.(m.level, m.msg, m.fields);
    else if (m.op === 'closed') resolveClosed?.(m.backlog);
  });
  worker.on('error', (err) => {
    log?.('error', 'audit log writer failed', { error: String(err?.stack ?? err) });
    resolveReady();
    resolveClosed?.(-1);
  });
  worker.unref();

  const sink: AuditSink = {
    record(r: AuditRecord) {
      if (closed) return;
      // The writer thread has stopped taking chunks (a disk that blocks every write): past the bound,
      // records are dropped and counted rather than held in memory without end.
      if (postedBytes - (last?.takenBytes ?? 0) + chunk.bytes > opts.maxQueueBytes) {
        overflow++;
        observer?.dropped(1, 'overflow');
        if (performance.now() - lastDropLog > 1000) {
          lastDropLog = performance.now();
          log?.('error', 'audit records dropped', { reason: 'overflow', dropped_total: overflow });
        }
        return;
      }
      chunk.write(r);
      if (chunk.bytes >= CHUNK_BYTES) post();
      else if (timer === undefined) {
        timer = setTimeout(post, opts.captureMs);
        timer.unref();
      }
    },
  };

  const dropped = () =>
    overflow + (last ? last.dropped.disk_full + last.dropped.log_full + last.dropped.torn : 0);

  const reader: AuditReader = createReader(
    store,
    () => last?.connected === true,
    () => last?.lastError ?? null,
  );

  return Object.assign(sink, {
    reader,
    /** The store the log writes to, for other small tables (the lifecycle's stage history). */
    store,
    /** Resolves after the writer's first connection attempt, whatever its outcome. */
    ready,
    status: () => ({
      database_connected: last?.connected === true,
      audit_store: kind,
      audit_queue: chunk.count,
      audit_backlog_rows: last?.backlog ?? 0,
      audit_log_bytes: last?.logBytes ?? 0,
      audit_dead_letter_rows: last?.deadLettered ?? 0,
      audit_dropped_rows: dropped(),
      ...(last?.lastError ? { audit_error: last.lastError } : {}),
    }),
    queueDepth: () => chunk.count,
    backlogRows: () => last?.backlog ?? 0,
    /**
     * Hand over what is held, then let the writer put what the store takes until the deadline; the rest
     * stays in the segment log, fsynced, for the next start. Resolves within `timeoutMs` whatever the store
     * does.
     */
    async close(timeoutMs = 10_000) {
      if (closed) return;
      closed = true;
      // The writer and the timer below keep the process alive until the log is closed: with everything
      // else closed already, an unreferenced wait would let the process exit mid-close.
      worker.ref();
      post();
      const deadline = Date.now() + timeoutMs;
      const done = new Promise<number>((resolve) => {
        resolveClosed = resolve;
      });
      // The writer stops trying the store 300 ms before the deadline: time to fsync and report.
      send({ op: 'close', deadline: deadline - 300 });
      const backlog = await Promise.race([
        done,
        new Promise<number>((r) => setTimeout(() => r(-1), Math.max(0, deadline - Date.now()))),
      ]);
      if (backlog !== 0) {
        // -1: the store was still busy (a call that hangs) at the deadline, and the writer is ended.
        log?.('warn', 'audit records not yet in the store stay in the log for the next start', {
          rows: backlog >= 0 ? backlog : (last?.backlog ?? null),
          dir: init.logDir,
          ...(backlog < 0 ? { reason: 'the store did not answer before the shutdown deadline' } : {}),
        });
      }
      await worker.terminate();
      await writerGone;
      await Promise.race([store.close().catch(() => {}), new Promise((r) => setTimeout(r, 500))]);
    },
  });
}

/** Reads go to the store directly; a store known to be down answers at once (503), not after a timeout. */
function createReader(store: AuditStore, up: () => boolean, lastError: () => string | null): AuditReader {
  const requireUp = () => {
    if (!up()) {
      const e = lastError();
      throw new Error(`the audit store is unavailable${e ? `: ${e}` : ''}`);
    }
  };
  return {
    async get(id) {
      requireUp();
      if (store.kind === 'postgres') {
        return (await store.query<Record<string, unknown>>(auditByIdSql('postgres'), [id]))[0];
      }
      const bytes = Buffer.from(id.replaceAll('-', ''), 'hex');
      return (
        await store.query<Record<string, unknown>>(auditByIdSql('sqlite'), [sqliteRowid(bytes), bytes])
      )[0];
    },
    async search(q) {
      requireUp();
      const { sql, params } = auditSearchSql(
        {
          ...q,
          since: q.since === undefined ? undefined : Date.parse(q.since),
          until: q.until === undefined ? undefined : Date.parse(q.until),
        },
        store.kind,
      );
      return store.query<Record<string, unknown>>(sql, params);
    },
  };
}

export type AuditLog = ReturnType<typeof createAuditLog>;
