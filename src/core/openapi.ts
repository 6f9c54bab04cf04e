/**
 * Routes are declared once, as OpenAPI operations, and registered from that declaration: the document lists
 * exactly the routes the app serves (test/conformance.test.ts checks both ways), with every status each answers.
 */
import type { OpenAPIHono, RouteConfig } from '@hono/zod-openapi';
import type { Context } from 'hono';
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
  413: 'Body, or rows, over the limit',
  415: 'Content-Type is not JSON',
  422: 'Invalid input; `field` names the culprit',
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

/** Every status a prediction route can answer besides 200. */
export const PREDICTION_ERRORS = [400, 404, 413, 415, 422, 500, 503, 504] as const;

export const json = <T>(schema: T, description: string) => ({
  description,
  content: { 'application/json': { schema } },
});

export const jsonBody = <T>(schema: T, examples?: Record<string, { summary: string; value: unknown }>) => ({
  body: { content: { 'application/json': { schema, ...(examples ? { examples } : {}) } }, required: true },
});
