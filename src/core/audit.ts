/** What the server records for every answered prediction, and where it hands the record. */
import type { TierName } from './cache.js';
import type { Tensor } from './tensor.js';

/**
 * What the server records for every answered prediction. The request path hands over references (the
 * request's input tensors, the outputs it was answered from) and the sink writes them in binary form
 * (audit-codec.ts): no JSON is made for the audit on the request's path.
 */
export interface AuditRecord {
  /** The id the response carried: the client's (body or X-Request-Id) or the server's. */
  request_id: string;
  /** When it was answered, in ms since the epoch. */
  time: number;
  route: string;
  model: string;
  model_version: string;
  model_sha256: string;
  /** The tensors the model was given for this request (after validation: what it actually saw). */
  input: Record<string, Tensor>;
  /** The tensors the answer was made from (cached rows included). */
  output: Record<string, Tensor>;
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
