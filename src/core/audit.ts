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
