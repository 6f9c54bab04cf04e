/** Open Inference Protocol v2 (KServe, Triton): server and model metadata, health, and JSON inference. */
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { invalid } from '../errors.js';
import {
  ACCESS_ERRORS,
  json,
  jsonBody,
  PREDICTION_ERRORS,
  publicAccess,
  register,
  secured,
  v2ErrorResponses,
} from '../openapi.js';
import type { ModelEntry } from '../registry.js';
import * as S from '../schemas.js';
import { toV2Datatype } from '../tensor.js';
import { decodeV2Inputs, encodeV2Output, selectV2Outputs } from '../v2.js';
import { LARGE_ANSWER_ROWS, notReady, type RouteContext } from './context.js';

const tags = ['open inference protocol v2'];

const inferRoute = (path: string, params: typeof S.ModelParams | typeof S.ModelVersionParams) =>
  createRoute({
    method: 'post',
    path,
    tags,
    summary: 'Inference with JSON tensors',
    ...secured('predict'),
    request: { params, ...jsonBody(S.V2InferRequest) },
    responses: {
      200: json(S.V2InferResponse, 'Output tensors'),
      ...v2ErrorResponses(...PREDICTION_ERRORS),
    },
  });

const metadataRoute = (path: string, params: typeof S.ModelParams | typeof S.ModelVersionParams) =>
  createRoute({
    method: 'get',
    path,
    tags,
    summary: 'Model metadata: inputs and outputs with datatype and shape (-1 = any size)',
    ...secured('predict'),
    request: { params },
    responses: {
      200: json(S.V2ModelMetadata, 'Model metadata'),
      ...v2ErrorResponses(...ACCESS_ERRORS, 404, 503),
    },
  });

const modelReadyRoute = (path: string, params: typeof S.ModelParams | typeof S.ModelVersionParams) =>
  createRoute({
    method: 'get',
    path,
    tags,
    summary: 'Model readiness',
    ...secured('predict'),
    request: { params },
    responses: { 200: json(S.V2ModelReady, 'Ready'), ...v2ErrorResponses(...ACCESS_ERRORS, 404, 503) },
  });

const tensorMeta = (t: ModelEntry['signature']['inputs'][number]) => ({
  name: t.name,
  datatype: toV2Datatype(t.type!),
  shape: t.shape.map((d) => (typeof d === 'number' ? d : -1)),
});

export function v2Routes(ctx: RouteContext) {
  const { deps, config, inference, readJson, answer } = ctx;
  const { registry, metrics } = deps;
  const app = new OpenAPIHono();

  const infer = async (c: Context) => {
    const started = performance.now();
    ctx.requireReady();
    // The model first: an unknown model is a 404 whatever the body holds.
    const entry = registry.resolve(c.req.param('name'), c.req.param('version'));
    const body = await readJson(c, S.V2InferRequest);
    const outputNames = selectV2Outputs(entry, body.outputs);
    // The row bound before any value is read: 200,000 rows cost ~0.4 s of this thread to decode first.
    const declaredRows = body.inputs[0]?.shape[0];
    if (entry.batchable && declaredRows !== undefined && declaredRows > config.maxRowsPerRequest) {
      throw invalid(
        'ERR_TOO_MANY_ROWS',
        'inputs',
        `${declaredRows} rows; at most ${config.maxRowsPerRequest} per request`,
      );
    }
    const { tensors, rows } = decodeV2Inputs(entry, body.inputs);
    if (entry.batchable && rows > config.maxRowsPerRequest) {
      throw invalid(
        'ERR_TOO_MANY_ROWS',
        'inputs',
        `${rows} rows; at most ${config.maxRowsPerRequest} per request`,
      );
    }
    const useCache = body.parameters?.use_cache;
    if (useCache !== undefined && typeof useCache !== 'boolean') {
      throw invalid('ERR_VALIDATION', 'parameters.use_cache', 'parameters.use_cache must be true or false');
    }
    const timeout = body.parameters?.timeout_ms;
    if (timeout !== undefined && (typeof timeout !== 'number' || !(timeout > 0))) {
      throw invalid(
        'ERR_VALIDATION',
        'parameters.timeout_ms',
        'parameters.timeout_ms must be a positive number',
      );
    }
    const { outputs, tiers } = await inference.run(entry, tensors, rows, {
      useCache: useCache !== false,
      outputs: outputNames,
      deadline: ctx.deadline(c, started, timeout),
    });
    metrics.rows(entry.name, entry.version, rows);
    if (rows >= LARGE_ANSWER_ROWS) await ctx.giveWay();
    const encoded = outputNames.map((n) => encodeV2Output(n, outputs[n]!));
    const requestId = body.id ?? crypto.randomUUID();
    const a = { route: c.req.routePath, entry, requestId, input: body.inputs, rows, started, tiers };
    return answer(c, a, (_latencyMs, cachedRows) => ({
      output: encoded,
      body: {
        model_name: entry.name,
        model_version: entry.version,
        id: body.id,
        parameters: { cached_rows: cachedRows },
        outputs: encoded,
      },
    }));
  };

  const metadata = (c: Context) => {
    ctx.requireLoaded();
    const e = registry.resolve(c.req.param('name'), c.req.param('version'));
    return c.json({
      name: e.name,
      versions: registry.versions(e.name).map((v) => v.version),
      platform: 'onnxruntime_onnx',
      inputs: e.signature.inputs.map(tensorMeta),
      outputs: e.signature.outputs.map(tensorMeta),
    });
  };

  const modelReady = (c: Context) => {
    ctx.requireReady();
    registry.resolve(c.req.param('name'), c.req.param('version'));
    return c.json({ name: c.req.param('name')!, ready: true });
  };

  register(
    app,
    createRoute({
      method: 'get',
      path: '/v2',
      ...publicAccess,
      tags,
      summary: 'Server metadata',
      responses: { 200: json(S.V2ServerMetadata, 'Server name, version and extensions') },
    }),
    (c) => c.json({ name: 'onnx-serve', version: config.serverVersion, extensions: [] }),
  );
  register(
    app,
    createRoute({
      method: 'get',
      path: '/v2/health/live',
      ...publicAccess,
      tags,
      summary: 'Server liveness',
      responses: { 200: json(S.V2Live, 'Live') },
    }),
    (c) => c.json({ live: true }),
  );
  register(
    app,
    createRoute({
      method: 'get',
      path: '/v2/health/ready',
      ...publicAccess,
      tags,
      summary: 'Server readiness: every model loaded and warmed in every worker',
      responses: { 200: json(S.V2Ready, 'Ready'), ...v2ErrorResponses(503) },
    }),
    (c) => {
      if (!ctx.isReadyForTraffic()) throw notReady();
      return c.json({ ready: true });
    },
  );
  register(app, metadataRoute('/v2/models/{name}', S.ModelParams), metadata);
  register(app, metadataRoute('/v2/models/{name}/versions/{version}', S.ModelVersionParams), metadata);
  register(app, modelReadyRoute('/v2/models/{name}/ready', S.ModelParams), modelReady);
  register(
    app,
    modelReadyRoute('/v2/models/{name}/versions/{version}/ready', S.ModelVersionParams),
    modelReady,
  );
  register(app, inferRoute('/v2/models/{name}/infer', S.ModelParams), infer);
  register(app, inferRoute('/v2/models/{name}/versions/{version}/infer', S.ModelVersionParams), infer);
  return app;
}
