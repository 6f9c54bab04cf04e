/**
 * Traces on Node: OpenTelemetry's SDK with an OTLP/HTTP exporter (protobuf or JSON) when an OTLP endpoint is
 * configured. Spans are batched and exported off the request's path; at shutdown what is left is flushed,
 * within a bound. Tests hand in their own exporter (an in-memory one).
 */
import { DiagLogLevel, diag, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter as OTLPHttpJsonExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  SimpleSpanProcessor,
  type SpanExporter,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace';
import type { ServerConfig } from './config.js';
import { log } from './log.js';

/** How often an export failure is logged at most: a collector that is down would fail every export. */
const DIAG_EVERY_MS = 60_000;

/** The SDK's own warnings and errors (an unreachable collector, dropped spans) into the process's log. */
function logDiagnostics() {
  let last = Number.NEGATIVE_INFINITY;
  let suppressed = 0;
  const write = (msg: string, args: unknown[]) => {
    const now = performance.now();
    if (now - last < DIAG_EVERY_MS) {
      suppressed++;
      return;
    }
    last = now;
    log('warn', `tracing: ${msg}`, {
      detail: args.map((a) => (a instanceof Error ? a.message : String(a))).join(' '),
      ...(suppressed > 0 ? { suppressed } : {}),
    });
    suppressed = 0;
  };
  diag.setLogger(
    { error: (m, ...a) => write(m, a), warn: (m, ...a) => write(m, a), info() {}, debug() {}, verbose() {} },
    { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
  );
}

export interface Tracing {
  tracer: Tracer;
  /** Export what is still buffered, then stop (at most `timeoutMs`). */
  shutdown(timeoutMs: number): Promise<void>;
}

/** OTEL_TRACES_SAMPLER's names, as the OpenTelemetry specification defines them. */
function samplerOf({ name, ratio }: { name: string; ratio: number }): Sampler {
  const root = name.endsWith('always_off')
    ? new AlwaysOffSampler()
    : name.endsWith('traceidratio')
      ? new TraceIdRatioBasedSampler(ratio)
      : new AlwaysOnSampler();
  return name.startsWith('parentbased_') ? new ParentBasedSampler({ root }) : root;
}

/**
 * The tracer the app gets: from the configuration (OTLP export), or around `exporter` (tests: every span is
 * handed to it as it ends). Undefined when neither asks for traces.
 */
export function createTracing(
  config: ServerConfig['tracing'],
  opts: { version: string; exporter?: SpanExporter },
): Tracing | undefined {
  if (!config && !opts.exporter) return undefined;
  if (config) logDiagnostics();
  const processor = opts.exporter
    ? new SimpleSpanProcessor({ exporter: opts.exporter })
    : new BatchSpanProcessor({
        exporter:
          config!.protocol === 'http/json'
            ? new OTLPHttpJsonExporter({ url: config!.url })
            : new OTLPProtoExporter({ url: config!.url }),
        // A busy server ends thousands of spans a second: export often, in large batches.
        maxQueueSize: 16_384,
        maxExportBatchSize: 2048,
        scheduledDelayMillis: 1000,
      });
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      'service.name': config?.serviceName ?? 'onnx-serve',
      'service.version': opts.version,
    }),
    sampler: samplerOf(config?.sampler ?? { name: 'parentbased_always_on', ratio: 1 }),
    spanProcessors: [processor],
  });
  return {
    tracer: provider.getTracer('onnx-serve', opts.version),
    async shutdown(timeoutMs) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        provider.shutdown().catch(() => {}),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
    },
  };
}
