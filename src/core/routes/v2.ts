/** Open Inference Protocol v2 (KServe, Triton): server and model metadata, health, and JSON inference. */
import { createRoute, OpenAPIHono, type RouteConfig } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { jsonCompressible, sendCompressible } from '../compression.js';
import { invalid } from '../errors.js';
import {
  ACCESS_ERRORS,
  json,
  PREDICTION_ERRORS,
  publicAccess,
  type RouteHandler,
  register,
  secured,
  v2ErrorResponses,
} from '../openapi.js';
import type { ModelEntry } from '../registry.js';
import * as S from '../schemas.js';
import { toV2Datatype } from '../tensor.js';
import {
  binaryOutputs,
  decodeV2Inputs,
  encodeV2Output,
  modelConfig,
  refuseUnservedExtensions,
  requestTimeoutMs,
  selectV2Outputs,
} from '../v2.js';
import { binaryBody, binaryInputs, encodeV2Binary, HEADER_LENGTH, splitInferBody } from '../v2-binary.js';
import { LARGE_ANSWER_ROWS, notReady, type RouteContext } from './context.js';

const tags = ['open inference protocol v2'];

const inferRoute = (path: string, params: typeof S.ModelParams | typeof S.ModelVersionParams) =>
  createRoute({
    method: 'post',
    path,
    tags,
    summary: 'Inference with JSON or binary tensors',
    ...secured('predict'),
    description:
      'A body with no Content-Type is JSON. With the binary tensor data extension the body is the JSON ' +
      'header (`Inference-Header-Content-Length` bytes) followed by each input whose ' +
      '`parameters.binary_data_size` is given, raw and little-endian, in input order; outputs asked for ' +
      "with `parameters.binary_data` (or the request's `binary_data_output`) follow the answer's JSON " +
      'header the same way. `Content-Encoding: gzip` or `deflate` bodies are accepted.',
    request: {
      params,
      body: {
        content: {
          'application/json': { schema: S.V2InferRequest },
          'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
        },
        required: true,
      },
    },
    responses: {
      200: {
        description: 'Output tensors',
        headers: {
          'Inference-Header-Content-Length': {
            description: 'With binary outputs: the length of the JSON header before them',
            schema: { type: 'integer' },
          },
        },
        content: {
          'application/json': { schema: S.V2InferResponse },
          'application/octet-stream': {
            schema: { type: 'string', format: 'binary' },
          },
        },
      },
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

const configRoute = (path: string, params: typeof S.ModelParams | typeof S.ModelVersionParams) =>
  createRoute({
    method: 'get',
    path,
    tags,
    summary:
      'Model configuration as Triton reports it: tensors, max batch size, dynamic batching, version policy',
    ...secured('predict'),
    request: { params },
    responses: {
      200: json(S.V2ModelConfig, 'Model configuration'),
      ...v2ErrorResponses(...ACCESS_ERRORS, 404, 503),
    },
  });

const statsRoute = (path: string, params: typeof S.ModelParams | typeof S.ModelVersionParams | undefined) =>
  createRoute({
    method: 'get',
    path,
    tags,
    summary:
      'Inference statistics as Triton reports them: request counts and durations, queue and compute time, batch sizes',
    ...secured('predict'),
    ...(params ? { request: { params } } : {}),
    responses: {
      200: json(S.V2ModelStats, 'Statistics per model version'),
      ...v2ErrorResponses(...ACCESS_ERRORS, 404, 503),
    },
  });

const tensorMeta = (t: ModelEntry['signature']['inputs'][number]) => ({
  name: t.name,
  datatype: toV2Datatype(t.type!),
  shape: t.shape.map((d) => (typeof d === 'number' ? d : -1)),
});

export function v2Routes(ctx: RouteContext) {
  const { deps, config, inference, body, answer } = ctx;
  const { registry, metrics } = deps;
  const app = new OpenAPIHono();
  /** A route for a model's default version, `/v2/models/{name}…`, and for one version, `…/versions/{v}…`. */
  const perModel = (
    route: (path: string, params: typeof S.ModelParams | typeof S.ModelVersionParams) => RouteConfig,
    suffix: string,
    handler: RouteHandler,
  ) => {
    register(app, route(`/v2/models/{name}${suffix}`, S.ModelParams), handler);
    register(app, route(`/v2/models/{name}/versions/{version}${suffix}`, S.ModelVersionParams), handler);
  };

  const infer = async (c: Context) => {
    const started = performance.now();
    ctx.requireReady();
    // The model first: an unknown model is a 404 whatever the body holds.
    const entry = ctx.chosen(c, registry.resolve(c.req.param('name'), c.req.param('version'), ctx.caller(c)));
    const { json, binary } = splitInferBody(await body.readV2Body(c), c.req.header(HEADER_LENGTH));
    const req = await body.parseJson(json, S.V2InferRequest, c);
    refuseUnservedExtensions(req);
    const outputNames = selectV2Outputs(entry, req.outputs);
    const asBinary = binaryOutputs(req, outputNames);
    // The row bound before any value is read: 200,000 rows cost ~0.4 s of this thread to decode first.
    const declaredRows = req.inputs[0]?.shape[0];
    if (entry.batchable && declaredRows !== undefined && declaredRows > config.maxRowsPerRequest) {
      throw invalid(
        'ERR_TOO_MANY_ROWS',
        'inputs',
        `${declaredRows} rows; at most ${config.maxRowsPerRequest} per request`,
      );
    }
    const raw = binaryInputs(req.inputs, binary);
    const { tensors, rows } = decodeV2Inputs(entry, req.inputs, raw);
    if (entry.batchable && rows > config.maxRowsPerRequest) {
      throw invalid(
        'ERR_TOO_MANY_ROWS',
        'inputs',
        `${rows} rows; at most ${config.maxRowsPerRequest} per request`,
      );
    }
    const useCache = req.parameters?.use_cache;
    if (useCache !== undefined && typeof useCache !== 'boolean') {
      throw invalid('ERR_VALIDATION', 'parameters.use_cache', 'parameters.use_cache must be true or false');
    }
    const shadow = ctx.shadow(entry, tensors, rows);
    const ran = performance.now();
    const { outputs, tiers } = await inference.run(entry, tensors, rows, {
      useCache: useCache !== false,
      outputs: outputNames,
      deadline: ctx.deadline(c, started, requestTimeoutMs(req.parameters)),
      trace: ctx.trace(c),
    });
    shadow?.(outputs, tiers?.some((t) => t !== undefined) ? undefined : performance.now() - ran);
    metrics.rows(entry.name, entry.version, rows);
    if (rows >= LARGE_ANSWER_ROWS) await ctx.giveWay(c);
    const encoded = outputNames.map((n) => encodeV2Output(n, outputs[n]!));
    const requestId = req.id ?? crypto.randomUUID();
    const a = { route: c.req.routePath, entry, requestId, inputs: tensors, outputs, rows, started, tiers };
    return answer(c, a, (_latencyMs, cachedRows) => {
      const parts: Uint8Array[] = [];
      const sent = encoded.map((t, k) => {
        if (!asBinary[k]) return t;
        const b = encodeV2Binary(t.name, outputs[t.name]!);
        parts.push(b.bytes);
        return b.tensor;
      });
      return {
        body: {
          model_name: entry.name,
          model_version: entry.version,
          id: req.id,
          parameters: { cached_rows: cachedRows },
          outputs: sent,
        },
        // Binary outputs follow the JSON; with none, the answer is plain JSON, as Triton sends it.
        send: (c: Context, header: unknown) => {
          if (parts.length === 0) return jsonCompressible(c, header);
          const b = binaryBody(header, parts);
          return sendCompressible(c, b.body, b.headers);
        },
      };
    });
  };

  const metadata = (c: Context) => {
    ctx.requireLoaded();
    const e = registry.resolve(c.req.param('name'), c.req.param('version'));
    return jsonCompressible(c, {
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

  /** The protocol extensions this server serves, by Triton's names. */
  const extensions = [
    'binary_tensor_data',
    'model_configuration',
    ...(deps.repository ? ['model_repository'] : []),
    ...(deps.stats ? ['statistics'] : []),
  ];

  const configuration = (c: Context) => {
    ctx.requireLoaded();
    const e = registry.resolve(c.req.param('name'), c.req.param('version'));
    return jsonCompressible(
      c,
      modelConfig(e, {
        batching: config.batching,
        instances: config.instances,
        requestTimeoutMs: config.requestTimeoutMs,
      }),
    );
  };

  const stats = (c: Context) => {
    ctx.requireLoaded();
    const name = c.req.param('name');
    const version = c.req.param('version');
    // An unknown model or version is a 404, as on every other route.
    const entries =
      name === undefined
        ? registry.all()
        : version === undefined
          ? registry.versions(registry.resolve(name).name)
          : [registry.resolve(name, version)];
    return jsonCompressible(c, { model_stats: deps.stats!.snapshot(entries) });
  };

  // Served where statistics are kept; before /v2/models/{name}: "stats" is this route, not a model (as in
  // Triton).
  if (deps.stats) {
    register(app, statsRoute('/v2/models/stats', undefined), stats);
    perModel(statsRoute, '/stats', stats);
  }
  perModel(configRoute, '/config', configuration);
  register(
    app,
    createRoute({
      method: 'post',
      path: '/v2/repository/index',
      tags,
      summary: 'The model repository: every version, its state (READY once loaded and warmed) and why not',
      ...secured('predict'),
      request: {
        body: {
          content: { 'application/json': { schema: S.V2RepositoryIndexRequest } },
          required: false,
        },
      },
      responses: {
        200: json(S.V2RepositoryIndex, 'Every version in the repository'),
        ...v2ErrorResponses(...ACCESS_ERRORS, 400, 413, 415, 422),
      },
    }),
    async (c) => {
      // Triton's client posts an empty body with no Content-Type.
      const req = await body.readOptionalV2Json(c, S.V2RepositoryIndexRequest);
      const ready = deps.isReady();
      const index =
        deps.repository?.index() ??
        registry.all().map((e) => ({
          name: e.name,
          version: e.version,
          state: ready ? ('READY' as const) : ('LOADING' as const),
          reason: ready ? '' : 'loading and warming in every worker',
        }));
      return jsonCompressible(c, req?.ready === true ? index.filter((m) => m.state === 'READY') : index);
    },
  );

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
    (c) => c.json({ name: 'onnx-serve', version: config.serverVersion, extensions }),
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
  perModel(metadataRoute, '', metadata);
  perModel(modelReadyRoute, '/ready', modelReady);
  perModel(inferRoute, '/infer', infer);
  return app;
}
