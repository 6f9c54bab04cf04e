/**
 * Traces (OpenTelemetry): a span per request, continuing the caller's trace (W3C `traceparent`), with
 * children for the cache lookup, the inference (its wait in the batcher, and the run as the worker thread
 * timed it) and the audit hand-off. The core takes any OpenTelemetry `Tracer` (`AppDeps.tracer`); with none,
 * none of this runs. Work timed on another thread or before a span could exist (the batcher's queue, the
 * worker's run) becomes a span with explicit start and end times.
 */
import {
  type Attributes,
  createTraceState,
  type Context as OtelContext,
  ROOT_CONTEXT,
  type Span,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type { RunReport } from './batcher.js';

/** Where a request's child spans hang: the tracer, and the context holding their parent span. */
export interface TraceScope {
  tracer: Tracer;
  context: OtelContext;
  /** The parent span itself (its ids go into log lines and the response's `traceparent`). */
  span: Span;
}

/** The context key under which a request's trace scope is kept (absent when tracing is off). */
export const TRACE_SCOPE = 'traceScope';

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ALL_ZERO = /^0+$/;

/**
 * The caller's span from a W3C `traceparent` header (and its `tracestate`), as the parent of this request's
 * span; the root context when the header is absent or malformed (the request then starts a trace of its own,
 * as the W3C Trace Context specification asks).
 */
export function parentContext(traceparent: string | undefined, tracestate: string | undefined): OtelContext {
  if (!traceparent) return ROOT_CONTEXT;
  const m = TRACEPARENT.exec(traceparent.trim());
  if (!m) return ROOT_CONTEXT;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string?,
  ];
  // Version ff is invalid; version 00 has exactly four fields (a later version may add more after them).
  if (version === 'ff' || (version === '00' && rest !== undefined)) return ROOT_CONTEXT;
  if (ALL_ZERO.test(traceId) || ALL_ZERO.test(spanId)) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId,
    spanId,
    traceFlags: Number.parseInt(flags, 16),
    isRemote: true,
    ...(tracestate ? { traceState: createTraceState(tracestate) } : {}),
  });
}

/** The `traceparent` naming this span: what the response carries, so a caller can find its trace. */
export function traceparentOf(span: Span): string {
  const s = span.spanContext();
  return `00-${s.traceId}-${s.spanId}-${s.traceFlags & 1 ? '01' : '00'}`;
}

/** A child of the scope's span, timed from now until `.end()`. */
export function startSpan(scope: TraceScope, name: string, attributes?: Attributes): Span {
  return scope.tracer.startSpan(name, { attributes }, scope.context);
}

/** The scope of a child span: its own children hang from it. */
export function childScope(scope: TraceScope, span: Span): TraceScope {
  return { tracer: scope.tracer, context: trace.setSpan(scope.context, span), span };
}

/** A child span with explicit times, in ms since the epoch: work timed elsewhere. */
export function timedSpan(
  scope: TraceScope,
  name: string,
  startMs: number,
  endMs: number,
  attributes?: Attributes,
): void {
  scope.tracer.startSpan(name, { startTime: startMs, attributes }, scope.context).end(endMs);
}

/** performance.now() of this thread, as ms since the epoch. */
export const epochMs = (now: number) => performance.timeOrigin + now;

/** How one request's rows went through the batcher and the model (see MicroBatcher.submit). */
export interface ItemTiming {
  /** performance.now() when the request's rows joined the queue, and when their batch was dispatched. */
  enqueuedAt: number;
  dispatchedAt: number;
  /** Rows and requests in the batch. */
  batchRows: number;
  batchRequests: number;
  /** The batch's model runs (one, or a large request's parts), each as the executing thread timed it. */
  runs: RunReport[];
  failed: boolean;
}

/**
 * The spans of one request's inference: its wait in the batcher (when batched) and each model run, placed
 * where the executing thread says it ran and lasting as long as it says the run took.
 */
export function inferenceSpans(scope: TraceScope, t: ItemTiming, rows: number, batched: boolean): void {
  if (batched) {
    timedSpan(scope, 'batcher.queue', epochMs(t.enqueuedAt), epochMs(t.dispatchedAt), {
      'onnxserve.rows': rows,
      'onnxserve.batch.rows': t.batchRows,
      'onnxserve.batch.requests': t.batchRequests,
    });
  }
  for (const run of t.runs) {
    if (run.threadStartedAt === undefined || run.busyMs === undefined) continue;
    timedSpan(scope, 'worker.run', run.threadStartedAt, run.threadStartedAt + run.busyMs, {
      'onnxserve.batch.rows': run.rows,
      'onnxserve.run.input_ms': run.inputMs,
      'onnxserve.run.infer_ms': run.inferMs,
      'onnxserve.run.output_ms': run.outputMs,
      ...(run.threadId !== undefined ? { 'thread.id': run.threadId } : {}),
    });
  }
}
