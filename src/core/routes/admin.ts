/**
 * Admin routes: what changes which models serve. They live here and nowhere else, so they are guarded in
 * one place: each needs a key with the `admin` scope (access.ts; ADMIN_OPEN=true opens them for local
 * development). Today: the Open Inference Protocol's repository load and unload, as Triton serves them, and
 * the seeds' reload routes (seed 000's `POST /model/reload`, seed 002's `POST /reload-model`).
 */
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { invalid, ServeError } from '../errors.js';
import { ACCESS_ERRORS, errorResponses, json, register, secured, v2ErrorResponses } from '../openapi.js';
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
      ...v2ErrorResponses(
        ...ACCESS_ERRORS,
        400,
        404,
        ...(action === 'load' ? [409 as const] : []),
        413,
        415,
        422,
        500,
        503,
      ),
    },
  });

const ReloadRequest = z
  .object({
    model: z
      .string()
      .min(1)
      .optional()
      .openapi({ description: 'The model to reload; absent = the default model, or every loaded model.' }),
  })
  .openapi('ReloadRequest');

const ReloadAnswer = z
  .object({
    status: z.literal('success'),
    message: z.string().openapi({ example: 'Model reloaded successfully' }),
    models: z
      .array(z.object({ name: z.string(), versions: z.array(z.string()) }))
      .openapi({ description: 'Each model reloaded, with the versions loaded now.' }),
  })
  .openapi('ReloadAnswer');

/** Seed 000's `POST /model/reload` and seed 002's `POST /reload-model`: one behaviour, two paths. */
const reloadRoute = (path: string, seed: string) =>
  createRoute({
    method: 'post',
    path,
    tags,
    summary: `Reload a model from the repository (${seed}): the loaded versions serve until the new ones are warmed`,
    description:
      'Reads the model’s versions from MODELS_DIR again and loads them with no request failed: a new or ' +
      'changed model.onnx starts new, warmed workers before traffic moves to them; a change to model.json ' +
      'alone refreshes the metadata in place. The model is `model` in the JSON body or the query, else the ' +
      'default model, else every loaded model.',
    ...secured('admin'),
    request: {
      query: z.object({
        model: z
          .string()
          .min(1)
          .optional()
          .openapi({ param: { name: 'model', in: 'query' } }),
      }),
      body: { content: { 'application/json': { schema: ReloadRequest } }, required: false },
    },
    responses: {
      200: json(ReloadAnswer, 'Reloaded; the versions each model serves now'),
      ...errorResponses(...ACCESS_ERRORS, 400, 404, 409, 413, 415, 422, 500, 503),
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

  const reload = async (c: Context) => {
    ctx.requireLoaded();
    const req = await body.readOptionalV2Json(c, ReloadRequest);
    const named = req?.model ?? c.req.query('model');
    if (named === '') throw invalid('ERR_VALIDATION', 'model', 'model: must name a model');
    const names = named
      ? [named]
      : deps.registry.defaultModel
        ? [deps.registry.defaultModel]
        : deps.registry.names();
    const models: { name: string; versions: string[] }[] = [];
    for (const name of names) {
      try {
        const entries = await repository.load(name);
        models.push({ name, versions: entries.map((e) => e.version) });
      } catch (err) {
        if (err instanceof ServeError && err.code === 'ERR_MODEL_NOT_FOUND') {
          throw new ServeError('ERR_MODEL_NOT_FOUND', `model: the repository holds no model '${name}'`, {
            field: 'model',
          });
        }
        throw err;
      }
    }
    return c.json({ status: 'success' as const, message: 'Model reloaded successfully', models });
  };
  register(app, reloadRoute('/model/reload', 'seed 000'), reload);
  register(app, reloadRoute('/reload-model', 'seed 002'), reload);
  return app;
}
