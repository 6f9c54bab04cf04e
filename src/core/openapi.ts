/**
 * Routes are declared once, as OpenAPI operations, and registered from that declaration: the document lists
 * exactly the routes the app serves (test/conformance.test.ts checks both ways), with every status each answers.
 */
import type { OpenAPIHono, RouteConfig } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { Scope } from './access.js';
import * as S from './schemas.js';

export type RouteHandler = (c: Context) => Response | Promise<Response>;

/** `/v2/models/{name}` → `/v2/models/:name`. */
export const honoPath = (openApiPath: string) => openApiPath.replace(/\{(\w+)\}/g, ':$1');

/** Publish the operation and serve it with `handler`. Request bodies are parsed by the handler (see http.ts). */
export function register(app: OpenAPIHono, route: RouteConfig, handler: RouteHandler): void {
  app.openAPIRegistry.registerPath(route);
  app.on(route.method.toUpperCase(), honoPath(route.path), handler);
}

const WHY: Record<number, string> = {
  400: 'Malformed JSON',
  404: 'Unknown model or version',
  401: 'No API key where one is needed, or a key that is not recognised (`WWW-Authenticate: Bearer`)',
  403: 'The key lacks the scope this route needs, or no admin key is configured (admin routes)',
  413: 'Body, or rows, over the limit',
  409: 'The model’s files in the repository do not load (a model.json that does not parse, a model.onnx the runtime refuses); the versions loaded before keep serving',
  415: 'Content-Type is not JSON',
  422: 'Invalid input; `field` names the culprit',
  429: 'Over the rate limit for this key (or address); see Retry-After and the RateLimit header',
  500: 'Inference failed (for example, a worker thread died mid-batch); only this request’s batch fails',
  503: 'Queue full, models still loading, or shutting down; see Retry-After',
  504: 'No answer within the request’s deadline (timeout_ms, X-Timeout-Ms, or the server’s limit)',
};

type ErrorStatus = keyof typeof WHY;

/** Error responses whose body is `schema`, each described by why it is answered (or by `description`). */
const errorsWith =
  (schema: typeof S.ErrorResponse | typeof S.V2Error) =>
  (...statuses: ErrorStatus[]) =>
    Object.fromEntries(
      statuses.map((s) => [s, { description: WHY[s]!, content: { 'application/json': { schema } } }]),
    );

/** Error responses with the server's error body (`{"error": {code, message, field}}`). */
export const errorResponses = errorsWith(S.ErrorResponse);

/** The same for Open Inference Protocol routes, whose error body is `{"error": "message"}`. */
export const v2ErrorResponses = errorsWith(S.V2Error);

/** One error response with its own description. */
export const errorResponse = (status: ErrorStatus, description: string) => ({
  [status]: { ...errorResponses(status)[status], description },
});

/** What a keyed route may answer before it runs: no or unknown key, wrong scope, over the rate limit. */
export const ACCESS_ERRORS = [401, 403, 429] as const;

/** Every status a prediction route can answer besides 200. */
export const PREDICTION_ERRORS = [400, 401, 403, 404, 413, 415, 422, 429, 500, 503, 504] as const;

/** How a key is sent; a route's security requirement names the scope it needs (OpenAPI 3.1 roles). */
export const SECURITY_SCHEMES = {
  ApiKey: {
    type: 'apiKey',
    in: 'header',
    name: 'X-API-Key',
    description:
      'An API key. Prediction routes need one with the `predict` scope when the server keys them ' +
      '(AUTH_PREDICTIONS=keyed; open by default); admin routes always need the `admin` scope.',
  },
  Bearer: { type: 'http', scheme: 'bearer', description: 'The same API key, as `Authorization: Bearer …`.' },
} as const;

/** Declares (and, through `routeAccess`, enforces) that a route needs a key with `scope`. */
export const secured = (scope: Scope): { security: Record<string, string[]>[] } => ({
  security: [{ ApiKey: [scope] }, { Bearer: [scope] }],
});

/** Declares that anyone may call a route (OpenAPI: an empty security requirement list). */
export const publicAccess: { security: Record<string, string[]>[] } = { security: [] };

/**
 * The access a declared route needs, read from its security requirement. A route that declares none fails
 * here, at start: a route nobody thought about is not served open by default.
 */
export function routeAccess(route: {
  method: string;
  path: string;
  security?: Record<string, string[]>[];
}): Scope | 'public' {
  if (route.security === undefined) {
    throw new Error(
      `${route.method.toUpperCase()} ${route.path} declares no access: add ...secured(scope) or ...publicAccess`,
    );
  }
  if (route.security.length === 0) return 'public';
  const scope = route.security[0]?.ApiKey?.[0];
  if (scope !== 'predict' && scope !== 'admin') {
    throw new Error(`${route.method.toUpperCase()} ${route.path}: unknown security requirement`);
  }
  return scope;
}

export const json = <T>(schema: T, description: string) => ({
  description,
  content: { 'application/json': { schema } },
});

export const jsonBody = <T>(schema: T, examples?: Record<string, { summary: string; value: unknown }>) => ({
  body: { content: { 'application/json': { schema, ...(examples ? { examples } : {}) } }, required: true },
});
