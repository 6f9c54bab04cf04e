/**
 * Admin routes: what changes which models serve. They live here and nowhere else, so they are guarded in
 * one place: each needs a key with the `admin` scope (access.ts; ADMIN_OPEN=true opens them for local
 * development). Today: the Open Inference Protocol's repository load and unload, as Triton serves them.
 */
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { invalid } from '../errors.js';
import { ACCESS_ERRORS, json, register, secured, v2ErrorResponses } from '../openapi.js';
import * as S from '../schemas.js';
import type { RouteContext } from './context.js';

const tags = ['admin'];

const repositoryRoute = (action: 'load' | 'unload', summary: string) =>
  createRoute({
    method: 'post',
    path: `/v2/repository/models/{name}/${action}`,
    tags,
    summary,
    ...secured('admin'),
    request: {
      params: S.ModelParams,
      body: { content: { 'application/json': { schema: S.V2RepositoryRequest } }, required: false },
    },
    responses: {
      200: json(S.V2RepositoryAction, action === 'load' ? 'Loaded and warmed' : 'Unloaded'),
      ...v2ErrorResponses(...ACCESS_ERRORS, 400, 404, 413, 415, 422, 500, 503),
    },
  });

export function adminRoutes(ctx: RouteContext) {
  const { deps, body } = ctx;
  const app = new OpenAPIHono();
  const repository = deps.repository;
  if (!repository) return app;

  /** The request's parameters: Triton's client sends `{}` (load) or `unload_dependents` (unload). */
  const readParameters = async (c: Context) => {
    const req = await body.readOptionalV2Json(c, S.V2RepositoryRequest);
    for (const key of Object.keys(req?.parameters ?? {})) {
      // A configuration or files sent with the request would load something other than the repository's.
      if (key === 'config' || key.startsWith('file:')) {
        throw invalid(
          'ERR_VALIDATION',
          `parameters.${key}`,
          `parameters.${key}: loading a model from a configuration or files in the request is not served; ` +
            'models load from the repository',
        );
      }
    }
  };

  register(
    app,
    repositoryRoute(
      'load',
      'Load (or reload) a model from the repository: its sessions are created and warmed in every worker before it takes requests',
    ),
    async (c) => {
      ctx.requireLoaded();
      await readParameters(c);
      const entries = await repository.load(c.req.param('name')!);
      return c.json({ name: c.req.param('name')!, state: 'READY', versions: entries.map((e) => e.version) });
    },
  );
  register(
    app,
    repositoryRoute(
      'unload',
      'Unload a model: new requests for it are refused (503), those accepted finish, then its sessions are released in every worker',
    ),
    async (c) => {
      ctx.requireLoaded();
      await readParameters(c);
      await repository.unload(c.req.param('name')!);
      return c.json({ name: c.req.param('name')!, state: 'UNAVAILABLE', versions: [] });
    },
  );
  return app;
}
