/** Liveness, readiness, and the seeds' /health. */
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { errorResponses, json, publicAccess, register } from '../openapi.js';
import * as S from '../schemas.js';
import { notReady, type RouteContext } from './context.js';

const tags = ['health'];

export function healthRoutes(ctx: RouteContext) {
  const { deps } = ctx;
  const { registry, predictor } = deps;
  const app = new OpenAPIHono();

  register(
    app,
    createRoute({
      method: 'get',
      path: '/health',
      ...publicAccess,
      tags,
      summary: 'Seed-shaped health: status, default model version, Redis and database state, backlog',
      responses: {
        200: json(S.Health, 'Healthy: every model loaded and warmed'),
        503: json(S.Health, 'Loading, or shutting down'),
      },
    }),
    async (c) => {
      const ready = ctx.isReadyForTraffic();
      // The default model's newest loaded version: none while loading, or while it is unloaded.
      const fallback = registry.defaultModel ? registry.versions(registry.defaultModel).at(-1) : undefined;
      const extra = deps.health ? await deps.health() : {};
      const body = {
        status: ready ? 'healthy' : 'unavailable',
        ready,
        model_version: fallback?.version ?? null,
        models: Object.fromEntries(
          registry.names().map((n) => [n, registry.versions(n).map((e) => e.version)]),
        ),
        queued_rows: predictor.queuedRows(),
        ...extra,
        timestamp: new Date().toISOString(),
      };
      return c.json(body, ready ? 200 : 503);
    },
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/health/live',
      ...publicAccess,
      tags,
      summary: 'Liveness: the process answers',
      responses: { 200: json(S.Live, 'Live') },
    }),
    (c) => c.json({ status: 'live' }),
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/health/ready',
      ...publicAccess,
      tags,
      summary: 'Readiness: every model loaded and warmed in every worker, and not shutting down',
      responses: { 200: json(S.Ready, 'Ready'), ...errorResponses(503) },
    }),
    (c) => {
      if (!ctx.isReadyForTraffic()) throw notReady();
      return c.json({ status: 'ready' });
    },
  );
  return app;
}
