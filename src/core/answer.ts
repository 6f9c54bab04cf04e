/**
 * The end of every prediction route: the response body and the audit record come from one result, so what
 * a client was told and what the log says cannot drift apart.
 */
import type { Context } from 'hono';
import { API_KEY_VAR } from './access.js';
import { type AuditSink, cacheSummary } from './audit.js';
import type { InferResult } from './inference.js';
import type { ModelEntry } from './registry.js';
import type { Tensor } from './tensor.js';
import { startSpan, TRACE_SCOPE, type TraceScope } from './tracing.js';

export interface Answered {
  /** The route as audited: `/predict`, `/predict/batch`, `/v2/models/:name/infer`… */
  route: string;
  entry: ModelEntry;
  requestId: string;
  /**
   * The tensors the model was given and the outputs the answer is made from, as audited (references: the
   * audit sink copies their bytes; by the time the answer is made the backend has handed back any input
   * buffer it moved to a worker thread).
   */
  inputs: Record<string, Tensor>;
  outputs: Record<string, Tensor>;
  rows: number;
  /** performance.now() when the request arrived. */
  started: number;
  tiers: InferResult['tiers'];
}

export interface Rendered {
  body: unknown;
  /** How `body` is sent, when not as JSON (binary tensor data). */
  send?: (c: Context, body: unknown) => Response;
}

export type Render = (latencyMs: number, cachedRows: number) => Rendered;

const round3 = (ms: number) => Math.round(ms * 1000) / 1000;

/** The context key under which an answered prediction is kept for the access log line. */
export const ANSWERED = 'answered';
export interface AnsweredSummary {
  requestId: string;
  rows: number;
  cache: string | null;
}

/** `traced`: requests carry a trace scope (AppDeps.tracer), and the audit hand-off gets a span. */
export function createAnswer(audit: AuditSink | undefined, traced = false) {
  return function answer(c: Context, a: Answered, render: Render): Response {
    const latencyMs = round3(performance.now() - a.started);
    let cachedRows = 0;
    if (a.tiers) for (const t of a.tiers) if (t !== undefined) cachedRows++;
    const { body, send } = render(latencyMs, cachedRows);
    const cache = cacheSummary(a.tiers);
    c.set(
      ANSWERED as never,
      { requestId: a.requestId, rows: a.rows, cache } satisfies AnsweredSummary as never,
    );
    // The hand-off to the audit log (a queue, written later off the request's path), traced when it is.
    const scope = traced && audit ? (c.get(TRACE_SCOPE as never) as TraceScope | undefined) : undefined;
    const handOff = scope?.span.isRecording() ? startSpan(scope, 'audit.record') : undefined;
    audit?.record({
      request_id: a.requestId,
      time: Date.now(),
      route: a.route,
      model: a.entry.name,
      model_version: a.entry.version,
      model_sha256: a.entry.sha256,
      input: a.inputs,
      output: a.outputs,
      rows: a.rows,
      latency_ms: latencyMs,
      cache,
      status: 200,
      client_id: c.req.header('x-client-id') ?? null,
      api_key: (c.get(API_KEY_VAR as never) as string | undefined) ?? null,
    });
    handOff?.end();
    return send ? send(c, body) : c.json(body);
  };
}

export type Answer = ReturnType<typeof createAnswer>;

/** Items per JSON.stringify call when a large list is written in slices (~0.7 ms each for predictions). */
const SLICE_ITEMS = 1000;

/**
 * A large list's JSON text, written a slice at a time with `between` awaited before each: one
 * JSON.stringify of 10,000 predictions held the event loop ~7 ms, and every small request behind it.
 */
export async function jsonInSlices(items: readonly unknown[], between: () => Promise<void>): Promise<string> {
  if (items.length <= SLICE_ITEMS) return JSON.stringify(items);
  const parts: string[] = [];
  for (let i = 0; i < items.length; i += SLICE_ITEMS) {
    await between();
    parts.push(JSON.stringify(items.slice(i, i + SLICE_ITEMS)).slice(1, -1));
  }
  return `[${parts.join(',')}]`;
}

/**
 * `body` as JSON.stringify writes it (same keys, same order, undefined values left out), with the text
 * `raw` (already JSON) as the value of `field`.
 */
export function jsonWithRaw(body: Record<string, unknown>, field: string, raw: string): string {
  let out = '{';
  for (const key of Object.keys(body)) {
    const value = key === field ? raw : JSON.stringify(body[key]);
    if (value === undefined) continue;
    if (out.length > 1) out += ',';
    out += `${JSON.stringify(key)}:${value}`;
  }
  return `${out}}`;
}
