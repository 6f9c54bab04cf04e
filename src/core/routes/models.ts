/** What is loaded: every model, each version's signature and metadata, and the seeds' model-info routes. */
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { validationError } from '../http.js';
import { ACCESS_ERRORS, errorResponses, json, register, secured } from '../openapi.js';
import type { ModelEntry } from '../registry.js';
import * as S from '../schemas.js';
import type { RouteContext } from './context.js';
import { driftMetrics } from './monitoring.js';

const tags = ['models'];

export const describeVersion = (e: ModelEntry) => ({
  version: e.version,
  sha256: e.sha256,
  inputs: e.signature.inputs,
  outputs: e.signature.outputs,
  feature_names: e.tabular?.featureNames ?? null,
  feature_count: e.tabular?.features ?? null,
  class_labels: e.classLabels ?? null,
  batchable: e.batchable,
  load_seconds: Math.round(e.loadSeconds * 1e4) / 1e4,
  stage: (e.metadata.stage as 'staging' | 'production' | 'archived' | undefined) ?? null,
  description: e.metadata.description ?? null,
  training: e.metadata.training ?? null,
  metrics: e.metadata.metrics ?? null,
  created: e.metadata.created ?? null,
});

const modelInfoRoute = (path: string) =>
  createRoute({
    method: 'get',
    path,
    tags,
    summary: `The default model's newest version, or the one named (seed clients' ${path})`,
    ...secured('predict'),
    request: { query: S.ModelQuery },
    responses: {
      200: json(S.ModelInfo, 'One version'),
      ...errorResponses(...ACCESS_ERRORS, 404, 422, 503),
    },
  });

export function modelRoutes(ctx: RouteContext) {
  const { registry } = ctx.deps;
  const app = new OpenAPIHono();

  register(
    app,
    createRoute({
      method: 'get',
      path: '/models',
      tags,
      summary: 'Every loaded model with its versions',
      ...secured('predict'),
      responses: { 200: json(S.ModelList, 'Models'), ...errorResponses(...ACCESS_ERRORS) },
    }),
    (c) =>
      c.json({
        default_model: registry.defaultModel ?? null,
        models: registry.names().map((n) => {
          const versions = registry.versions(n);
          return {
            name: n,
            versions: versions.map((v) => v.version),
            // The version serving requests that name none: production, a traffic policy's, or the newest.
            default_version: registry.resolve(n).version,
            description: versions.at(-1)!.metadata.description ?? null,
          };
        }),
      }),
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/models/{name}',
      tags,
      summary: 'One model: every version’s signature, sha256 and metadata',
      ...secured('predict'),
      request: { params: S.ModelParams },
      responses: { 200: json(S.ModelDetail, 'The model'), ...errorResponses(...ACCESS_ERRORS, 404, 503) },
    }),
    (c) => {
      ctx.requireLoaded();
      const name = c.req.param('name')!;
      const serving = registry.resolve(name); // 404 ERR_MODEL_NOT_FOUND
      return c.json({
        name,
        default_version: serving.version,
        versions: registry.versions(name).map(describeVersion),
      });
    },
  );

  const modelInfo = (c: Context) => {
    ctx.requireLoaded();
    const query = S.ModelQuery.safeParse(c.req.query());
    if (!query.success) throw validationError(query.error);
    const e = registry.resolve(query.data.model, query.data.version);
    return c.json({ name: e.name, ...describeVersion(e), drift_metrics: driftMetrics(ctx.deps.drift, e) });
  };
  register(app, modelInfoRoute('/model/info'), modelInfo);
  register(app, modelInfoRoute('/model-info'), modelInfo);
  return app;
}
