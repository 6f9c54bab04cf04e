/**
 * The runtime-neutral server: route modules composed into one Hono app, one error handler, one OpenAPI
 * document generated from the routes' own declarations. Node (src/node) and Cloudflare Workers (edge/) hand
 * it their dependencies; it imports nothing of either.
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import { type Attributes, SpanKind, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api';
import type { Context, MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';
import { routePath } from 'hono/route';
import { API_KEY_VAR, createAccessControl, type Scope } from './access.js';
import { ANSWERED, type AnsweredSummary } from './answer.js';
import { type ErrorCode, ServeError } from './errors.js';
import { silentLogger } from './logger.js';
import { honoPath, routeAccess, SECURITY_SCHEMES } from './openapi.js';
import type { ModelEntry } from './registry.js';
import { adminRoutes } from './routes/admin.js';
import { auditRoutes } from './routes/audit.js';
import {
  type AppConfig,
  type AppDeps,
  CHOSEN_MODEL,
  type CorsConfig,
  createRouteContext,
  REQUEST_ID,
} from './routes/context.js';
import { healthRoutes } from './routes/health.js';
import { lifecycleRoutes } from './routes/lifecycle.js';
import { modelRoutes } from './routes/models.js';
import { monitoringRoutes } from './routes/monitoring.js';
import { operationRoutes } from './routes/operations.js';
import { predictionRoutes } from './routes/predictions.js';
import { v2Routes } from './routes/v2.js';
import { parentContext, TRACE_SCOPE, type TraceScope, traceparentOf } from './tracing.js';

export type { AppConfig, AppDeps, CorsConfig } from './routes/context.js';

/** An error's stack (or text) for a log line. */
const errorText = (err: unknown) => (err instanceof Error ? (err.stack ?? String(err)) : String(err));

/** The routes admission control guards (Hono paths, as metrics and access lines name them). */
export const PREDICTION_PATHS = [
  '/predict',
  '/predict/batch',
  '/v2/models/:name/infer',
  '/v2/models/:name/versions/:version/infer',
];

const isV2 = (path: string) => path === '/v2' || path.startsWith('/v2/');

/**
 * Whether a body that nobody has read is too large to keep its connection for: over 64 KiB, or of
 * undeclared length. An error answered before the body was read (a refusal by access control or admission,
 * an unknown route or model) closes the connection then: keeping it would mean reading, and throwing away,
 * the rest of the body first.
 */
export const unreadBodyIsLarge = (contentLength: string | null | undefined, chunked: boolean) =>
  contentLength === null || contentLength === undefined ? chunked : Number(contentLength) > 64 * 1024;

const largeUnreadBody = (req: Request) =>
  !req.bodyUsed && unreadBodyIsLarge(req.headers.get('content-length'), req.headers.has('transfer-encoding'));

/**
 * An error's JSON body: `{error: {code, message, field?, candidates?}}`, or on the Open Inference Protocol's
 * routes its own shape, one message (naming the field, as the server's own error bodies do).
 */
export function errorBody(e: ServeError, path: string): unknown {
  if (isV2(path)) {
    return { error: e.field && !e.message.includes(e.field) ? `${e.field}: ${e.message}` : e.message };
  }
  const error: Record<string, unknown> = { code: e.code, message: e.message };
  if (e.field) error.field = e.field;
  if (e.candidates) error.candidates = e.candidates;
  return { error };
}

/** Headers every response carries; the request headers a browser may send cross-origin, by default. */
export const SECURITY_HEADERS = (crossOrigin: boolean): [string, string][] => [
  ['X-Content-Type-Options', 'nosniff'],
  ['X-Frame-Options', 'DENY'],
  ['Referrer-Policy', 'no-referrer'],
  ['Strict-Transport-Security', 'max-age=15552000; includeSubDomains'],
  ['Cross-Origin-Opener-Policy', 'same-origin'],
  ['Cross-Origin-Resource-Policy', crossOrigin ? 'cross-origin' : 'same-origin'],
];
const CORS_REQUEST_HEADERS = [
  'Content-Type',
  'Content-Encoding',
  'Authorization',
  'X-API-Key',
  'X-Request-Id',
  'X-Timeout-Ms',
  'X-Client-Id',
  'Inference-Header-Content-Length',
  'traceparent',
  'tracestate',
];
const CORS_EXPOSED_HEADERS = [
  'RateLimit',
  'RateLimit-Policy',
  'Retry-After',
  'X-Request-Id',
  'Inference-Header-Content-Length',
  'traceparent',
];

/** The route a request matched, by its pattern (`unmatched` for 404s and 405s). */
function routeOf(c: Context): string {
  const code = c.get('errorCode' as never) as ErrorCode | undefined;
  return code === 'ERR_NOT_FOUND' || code === 'ERR_METHOD_NOT_ALLOWED' ? 'unmatched' : routePath(c, -1);
}

/** The request's id for its log lines: its own (client's or made), else the header's. */
const requestIdOf = (c: Context) =>
  (c.get(REQUEST_ID as never) as string | undefined) ?? c.req.header('x-request-id') ?? null;

/**
 * A span per request (kind SERVER), continuing the caller's trace when it sends a W3C `traceparent`; the
 * response carries this span's `traceparent`. Named by method and route once the route is known.
 */
function traceRequests(
  tracer: Tracer,
  header: (c: Context, name: string, value: string) => void,
): MiddlewareHandler {
  return async function traceRequest(c, next) {
    const parent = parentContext(c.req.header('traceparent'), c.req.header('tracestate'));
    const span = tracer.startSpan(
      c.req.method,
      { kind: SpanKind.SERVER, attributes: { 'http.request.method': c.req.method, 'url.path': c.req.path } },
      parent,
    );
    const scope: TraceScope = { tracer, context: trace.setSpan(parent, span), span };
    c.set(TRACE_SCOPE as never, scope as never);
    header(c, 'traceparent', traceparentOf(span));
    try {
      await next();
    } finally {
      if (span.isRecording()) {
        const route = routeOf(c);
        const status = c.res.status;
        const entry = c.get(CHOSEN_MODEL as never) as ModelEntry | undefined;
        const answered = c.get(ANSWERED as never) as AnsweredSummary | undefined;
        const requestId = requestIdOf(c);
        span.updateName(`${c.req.method} ${route}`);
        const attributes: Attributes = { 'http.route': route, 'http.response.status_code': status };
        if (requestId !== null) attributes['onnxserve.request_id'] = requestId;
        if (entry) {
          attributes['onnxserve.model'] = entry.name;
          attributes['onnxserve.model_version'] = entry.version;
        }
        if (answered) {
          attributes['onnxserve.rows'] = answered.rows;
          if (answered.cache) attributes['onnxserve.cache'] = answered.cache;
        }
        span.setAttributes(attributes);
        if (status >= 500) {
          const code = c.get('errorCode' as never) as string | undefined;
          span.setStatus({ code: SpanStatusCode.ERROR, ...(code ? { message: code } : {}) });
        }
      }
      span.end();
    }
  };
}

/**
 * The security headers, set before the route runs so they join the response as it is built (errors too).
 * (Hono's secureHeaders sets them on the finished response.) On Node the entry point sets them on Node's
 * response instead (`AppConfig.securityHeadersByRuntime`): any header set through Hono's context makes
 * every answer build a Headers object rather than take @hono/node-server's lightweight path, which cost
 * a quarter of /predict's CPU per request (bench/ab-wrk.sh).
 */
function securityHeaders(crossOrigin: boolean): MiddlewareHandler {
  const headers = SECURITY_HEADERS(crossOrigin);
  return function setSecurityHeaders(c, next) {
    for (const [name, value] of headers) c.header(name, value);
    return next();
  };
}

function corsMiddleware(config: CorsConfig): MiddlewareHandler {
  return cors({
    origin: config.origins.includes('*') ? '*' : [...config.origins],
    allowMethods: [...(config.methods ?? ['GET', 'HEAD', 'POST', 'PUT', 'DELETE'])],
    allowHeaders: [...(config.headers ?? CORS_REQUEST_HEADERS)],
    exposeHeaders: CORS_EXPOSED_HEADERS,
    maxAge: config.maxAgeSeconds ?? 600,
  });
}

export function createApp(deps: AppDeps, config: AppConfig) {
  const { metrics } = deps;
  const ctx = createRouteContext(deps, config);
  const app = new OpenAPIHono();

  const logger = deps.logger ?? silentLogger;
  // One access line per request (or per sampled request), as pino writes it: fields, then the message.
  const sample = logger.isLevelEnabled('info') ? (config.accessLogSample ?? 1) : 0;
  /** A traced request's ids, for its log lines (absent when tracing is off). */
  const traceIds = (c: Context) => {
    const scope = c.get(TRACE_SCOPE as never) as TraceScope | undefined;
    if (!scope) return undefined;
    const s = scope.span.spanContext();
    return { trace_id: s.traceId, span_id: s.spanId };
  };
  const accessLine = (c: Context, route: string, status: number, ms: number, code: ErrorCode | undefined) => {
    const entry = c.get(CHOSEN_MODEL as never) as ModelEntry | undefined;
    const answered = c.get(ANSWERED as never) as AnsweredSummary | undefined;
    const fields: Record<string, unknown> = {
      request_id: answered?.requestId ?? requestIdOf(c),
      method: c.req.method,
      route,
      status,
      latency_ms: Math.round(ms * 1000) / 1000,
      model: entry?.name ?? null,
      version: entry?.version ?? null,
      rows: answered?.rows ?? null,
      cache: answered?.cache ?? null,
      api_key: (c.get(API_KEY_VAR as never) as string | undefined) ?? null,
      error: code ?? null,
    };
    if (deps.tracer) Object.assign(fields, traceIds(c));
    logger.info(fields, 'request');
  };

  app.use('*', async function recordRequest(c, next) {
    const started = performance.now();
    await next();
    const code = c.get('errorCode' as never) as ErrorCode | undefined;
    const route = routeOf(c);
    const ms = performance.now() - started;
    const status = c.res.status;
    metrics.request(route, c.req.method, status, ms / 1000);
    if (sample > 0 && (sample >= 1 || status >= 500 || Math.random() < sample)) {
      accessLine(c, route, status, ms, code);
    }
  });
  // Inside recordRequest, so the access line can name the request's trace.
  if (deps.tracer) {
    const header =
      deps.responseHeader ?? ((c: Context, name: string, value: string) => c.header(name, value));
    app.use('*', traceRequests(deps.tracer, header));
  }
  if (!config.securityHeadersByRuntime) app.use('*', securityHeaders(config.cors !== undefined));
  if (config.cors) app.use('*', corsMiddleware(config.cors));

  // Keys and rate limits come before admission control: a refused caller never holds a place, and an
  // anonymous large body never waits in the line for one. Each route declares the scope it needs (its
  // OpenAPI security requirement); the table is read from the declarations once every route is mounted.
  const access = createAccessControl(config.access ?? { keys: [] }, {
    limiter: deps.rateLimiter,
    clientAddress: deps.clientAddress,
    refused: metrics.refused ? (reason, key) => metrics.refused!(reason, key) : undefined,
    header: deps.responseHeader,
    sha256: deps.sha256,
  });
  let scopes = new Map<string, Scope>(); // filled below, once every route is mounted
  app.use('*', function checkAccess(c, next) {
    const scope = scopes.get(`${c.req.method === 'HEAD' ? 'GET' : c.req.method} ${routePath(c, -1)}`);
    return scope ? access.guard(scope)(c, next) : next();
  });

  // Each prediction request counts for the model version it asked for, answered or failed (Triton's stats).
  const { stats } = deps;
  if (stats) {
    for (const path of PREDICTION_PATHS) {
      app.use(path, async function recordModelStats(c, next) {
        const started = performance.now();
        await next();
        const entry = c.get(CHOSEN_MODEL as never) as ModelEntry | undefined;
        if (entry) stats.request(entry, c.res.status < 400, performance.now() - started);
      });
    }
  }

  // Refusals happen here, on the headers alone, before any route reads a body: prediction routes only.
  if (deps.admission) {
    for (const path of PREDICTION_PATHS) app.use(path, deps.admission.middleware);
  }

  app.onError((err, c) => {
    let e: ServeError;
    if (err instanceof ServeError) {
      e = err;
      if (e.code === 'ERR_INTERNAL' || e.code === 'ERR_INFERENCE') {
        logger.error(
          { request_id: requestIdOf(c), ...traceIds(c), route: c.req.path, error: errorText(e.cause) },
          e.message,
        );
      }
    } else {
      logger.error(
        { request_id: requestIdOf(c), ...traceIds(c), route: c.req.path, error: errorText(err) },
        'unexpected error',
      );
      e = new ServeError('ERR_INTERNAL', 'internal error');
    }
    metrics.error(e.code);
    c.set('errorCode' as never, e.code as never);
    if (e.retryAfterSeconds !== undefined) c.header('Retry-After', String(e.retryAfterSeconds));
    // The rest of an oversized body was never read: the connection cannot carry another request.
    if (e.code === 'ERR_BODY_TOO_LARGE') c.header('Connection', 'close');
    if (largeUnreadBody(c.req.raw)) c.header('Connection', 'close');
    return c.json(errorBody(e, c.req.path), e.status as 400);
  });

  app.route('/', predictionRoutes(ctx));
  app.route('/', v2Routes(ctx));
  app.route('/', modelRoutes(ctx));
  app.route('/', healthRoutes(ctx));
  app.route('/', auditRoutes(ctx));
  app.route('/', monitoringRoutes(ctx));
  // What changes which models serve: one module (its routes need the admin scope).
  app.route('/', adminRoutes(ctx));
  app.route('/', lifecycleRoutes(ctx));
  for (const [name, scheme] of Object.entries(SECURITY_SCHEMES)) {
    app.openAPIRegistry.registerComponent('securitySchemes', name, scheme);
  }

  let document: unknown;
  const getDocument = () => {
    document ??= app.getOpenAPI31Document({
      openapi: '3.1.0',
      info: {
        title: 'onnx-serve',
        version: config.serverVersion,
        description:
          'ONNX model serving: the `/predict` API seed clients send, and the Open Inference Protocol v2 ' +
          '(KServe, Triton). Errors are `{"error": {"code", "message", "field"}}` (`{"error": "…"}` under /v2).',
      },
      tags: [
        { name: 'predictions', description: 'The seed clients’ API' },
        { name: 'open inference protocol v2', description: 'KServe / Triton clients' },
        { name: 'models', description: 'What is loaded' },
        { name: 'health', description: 'Liveness and readiness' },
        { name: 'audit', description: 'Reading the audit log back' },
        { name: 'monitoring', description: 'Drift, and the seeds’ statistics' },
        { name: 'admin', description: 'Changing which models serve (the repository API)' },
        { name: 'operations', description: 'Metrics and documentation' },
      ],
    });
    return document;
  };
  app.route('/', operationRoutes(ctx, getDocument));

  scopes = routeScopes(app);

  /** Every path the app serves, with its methods: a known path asked with another method gets 405. */
  const paths = new Map<string, { re: RegExp; methods: string[] }>();
  for (const r of app.routes) {
    if (r.method === 'ALL') continue;
    const literal = r.path.split(/:\w+/).map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    const source = `^${literal.join('[^/]+')}$`;
    const path = paths.get(source) ?? { re: new RegExp(source), methods: [] };
    path.methods.push(...(r.method === 'GET' ? ['GET', 'HEAD'] : [r.method]));
    paths.set(source, path);
  }

  app.notFound((c) => {
    const allowed = [...paths.values()].find((p) => p.re.test(c.req.path))?.methods;
    const code: ErrorCode = allowed ? 'ERR_METHOD_NOT_ALLOWED' : 'ERR_NOT_FOUND';
    c.set('errorCode' as never, code as never);
    metrics.error(code);
    if (allowed) c.header('Allow', allowed.join(', '));
    if (largeUnreadBody(c.req.raw)) c.header('Connection', 'close');
    const message = allowed
      ? `${c.req.method} is not served at ${c.req.path}; use ${allowed.join(' or ')}`
      : `no route ${c.req.method} ${c.req.path}`;
    const status = allowed ? 405 : 404;
    if (isV2(c.req.path)) return c.json({ error: message }, status);
    return c.json({ error: { code, message } }, status);
  });

  return app;
}

/**
 * `METHOD /hono/:path` → the scope it needs, for every route that needs one. Every route the app serves
 * must have declared its access (routeAccess throws otherwise), so none is open by oversight.
 */
function routeScopes(app: OpenAPIHono): Map<string, Scope> {
  const table = new Map<string, Scope>();
  const declared = new Set<string>();
  for (const d of app.openAPIRegistry.definitions) {
    if (d.type !== 'route') continue;
    const key = `${d.route.method.toUpperCase()} ${honoPath(d.route.path)}`;
    declared.add(key);
    const access = routeAccess(d.route as Parameters<typeof routeAccess>[0]);
    if (access !== 'public') table.set(key, access);
  }
  for (const r of app.routes) {
    if (r.method === 'ALL') continue; // middleware
    if (!declared.has(`${r.method} ${r.path}`)) {
      throw new Error(`${r.method} ${r.path} is served but not declared (use register(), with its access)`);
    }
  }
  return table;
}
