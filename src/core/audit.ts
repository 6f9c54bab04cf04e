/** What the server records for every answered prediction, and where it hands the record. */
import type { TierName } from './cache.js';

export interface AuditRecord {
  /** Unique per answered request, made by the server: the audit table's primary key. */
  id: string;
  /** The id the response carried: the client's (body or X-Request-Id) or the server's. */
  request_id: string;
  time: string;
  route: string;
  model: string;
  model_version: string;
  model_sha256: string;
  input: unknown;
  output: unknown;
  rows: number;
  latency_ms: number;
  /** Which tier answered: `l1`, `l2`, `mixed` (some rows from a tier), or null (the model ran). */
  cache: TierName | 'mixed' | null;
  status: number;
  client_id: string | null;
  /** The name of the API key the request presented (never the key), or null. */
  api_key: string | null;
}

/** What a search of the audit log may ask; every field narrows it. */
export interface AuditQuery {
  request_id?: string;
  model?: string;
  version?: string;
  /** ISO 8601 times: records at or after `since`, before `until`. */
  since?: string;
  until?: string;
  limit: number;
  /** Include each record's input and output (they may be megabytes); otherwise the summary only. */
  include_io: boolean;
}

/** Reading the audit log back: "what did we tell this customer, with which model?" */
export interface AuditReader {
  get(id: string): Promise<Record<string, unknown> | undefined>;
  search(q: AuditQuery): Promise<Record<string, unknown>[]>;
}

/** Takes records without waiting: writing them is never on the request's path. */
export interface AuditSink {
  record(r: AuditRecord): void;
}

/** One word for the tiers that answered a request's rows. */
export function cacheSummary(tiers: readonly (TierName | undefined)[] | undefined): AuditRecord['cache'] {
  if (!tiers || tiers.length === 0) return null;
  const first = tiers[0];
  for (const t of tiers) if (t !== first) return 'mixed';
  return first ?? null;
}

/**
 * What Postgres cannot store in text or jsonb: NUL, and UTF-16 surrogates without their pair. JSON.stringify
 * writes both as escapes (`\u0000`, `\udXXX`); a well-formed pair is written as the character itself.
 */
const UNSTORABLE_ESCAPE = /\\u(0000|d[89a-f])/i;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const storable = (s: string) => s.replaceAll('\0', '\uFFFD').replace(LONE_SURROGATE, '\uFFFD');

/** A copy with every string (keys too) made storable; only for the rare record that needs it. */
function sanitize(value: unknown): unknown {
  if (typeof value === 'string') return storable(value);
  if (Array.isArray(value)) return value.map(sanitize);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[storable(k)] = sanitize(v);
    return out;
  }
  return value;
}

/**
 * Records as JSON Postgres accepts: unstorable characters become U+FFFD. A client's `request_id` holding
 * NUL once failed every batch it joined. The check is one regex over the JSON; only a match pays for a copy.
 */
export function toAuditJson(value: AuditRecord | readonly AuditRecord[]): string {
  const json = JSON.stringify(value);
  return UNSTORABLE_ESCAPE.test(json) ? JSON.stringify(sanitize(value)) : json;
}
