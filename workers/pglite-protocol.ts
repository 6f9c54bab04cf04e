/** Messages between the main thread and the PGlite worker. */
export interface PgliteRequest {
  id: number;
  op: 'init' | 'insert' | 'query' | 'close';
  json?: string;
  sql?: string;
  params?: unknown[];
}

export interface PgliteReply {
  id: number;
  error?: string;
  /** The SQLSTATE of a database error, so the main thread can tell bad data from a failing store. */
  code?: string;
  count?: number;
  rows?: unknown[];
}
