/** Messages between the main thread and the audit log writer thread (workers/audit-writer.ts). */

export interface AuditWriterInit {
  /** Segment log directory. */
  logDir: string;
  /** Where records the store refuses for their data are set aside (a JSON line each). */
  deadLetterPath: string;
  store: { kind: 'postgres'; url: string; timeoutMs: number } | { kind: 'sqlite'; path: string };
  /** This log's name in the store's progress table (stable for one AUDIT_DIR). */
  writer: string;
  batchRows: number;
  batchBytes: number;
  /** Records reach the store within about this long while it is up. */
  flushMs: number;
  retryMs: number;
  segmentBytes: number;
  maxLogBytes: number;
  /** How often appended records are fsynced. */
  fsyncMs: number;
  /** Days of records the store keeps (0: all). */
  retentionDays: number;
}

export type ToWriter =
  /** Frames written by the request path (audit-codec.ts), transferred. */
  | { op: 'chunk'; buffer: ArrayBuffer; bytes: number; count: number }
  /** Write what the store can take until `deadline` (ms since the epoch), fsync the log, stop. */
  | { op: 'close'; deadline: number };

export interface WriterStatus {
  op: 'status';
  connected: boolean;
  store: 'postgres' | 'sqlite';
  /** Records in the log not yet in the store. */
  backlog: number;
  logBytes: number;
  /** Chunk bytes the writer has taken (appended or dropped): the main thread's in-flight count. */
  takenBytes: number;
  /** Totals since start. */
  written: number;
  failed: number;
  deadLettered: number;
  dropped: { disk_full: number; log_full: number; torn: number };
  /** Seconds of each batch written since the last status. */
  batchSeconds: number[];
  lastError: string | null;
}

export type FromWriter =
  | WriterStatus
  | { op: 'log'; level: 'info' | 'warn' | 'error'; msg: string; fields?: Record<string, unknown> }
  | { op: 'closed'; backlog: number };
