import { swaggerUI } from '@hono/swagger-ui';
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { routePath } from 'hono/route';
import { type AuditSink, cacheSummary } from './audit.js';
import type { TieredCache } from './cache.js';
import { type ErrorCode, invalid, ServeError } from './errors.js';
import { rowsToTensor } from './features.js';
import { createInference, type InferResult } from './inference.js';
import type { AppMetrics } from './metrics.js';
import { type RowPrediction, toRowPredictions } from './prediction.js';
import type { Predictor } from './predictor.js';
import type { ModelEntry, ModelRegistry, TabularInput } from './registry.js';
import * as S from './schemas.js';
import { toV2Datatype } from './tensor.js';
import { decodeV2Inputs, encodeV2Output, selectV2Outputs } from './v2.js';

export interface AppDeps {
  registry: ModelRegistry;
  predictor: Predictor;
  metrics: AppMetrics;
  /** True once every model is loaded and warmed, false again while shutting down. */
  isReady: () => boolean;
  /** Connectivity fields for /health (cache, audit store…), filled in by the entry point. */
  health?: () => Promise<Record<string, unknown>>;
  /** Prediction cache; absent = none. */
  cache?: TieredCache;
  /** Where audit records go; absent = none. */
  audit?: AuditSink;
}

export interface AppConfig {
  /** Largest request body accepted. */
  maxBodyBytes: number;
  /** Most rows one request may carry. */
  maxRowsPerRequest: number;
  /** Reported by GET / and GET /v2. */
  serverVersion: string;
  /** Let concurrent identical misses share one inference (default). Off where requests must not wait on each other. */
  singleFlight?: boolean;
}

const round3 = (ms: number) => Math.round(ms * 1000) / 1000;
const JSON_TYPE = /^application\/([a-z.+-]+\+)?json/i;

/** Zod's issue path as a field name: ['requests', 3, 'features'] → requests[3].features. */
function fieldName(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)),
    '',
  );
}

/** Read a body stream with no declared length, refusing it once it passes `max` bytes. */
async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  max: number,
  tooLarge: () => Error,
): Promise<string> {
  if (!body) return '';
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(all);
}

function requireTabular(entry: ModelEntry): TabularInput {
  if (!entry.tabular) {
    throw new ServeError(
      'ERR_INPUT_SHAPE',
      `model ${entry.name} does not take a single row of features: use /v2/models/${entry.name}/infer`,
      {
        field: 'model',
      },
    );
  }
  return entry.tabular;
}

const errorResponses = {
  400: { description: 'Malformed JSON', content: { 'application/json': { schema: S.ErrorResponse } } },
  404: {
    description: 'Unknown model or version',
    content: { 'application/json': { schema: S.ErrorResponse } },
  },
  413: {
    description: 'Body or row count over the limit',
    content: { 'application/json': { schema: S.ErrorResponse } },
  },
  415: { description: 'Not application/json', content: { 'application/json': { schema: S.ErrorResponse } } },
  422: {
    description: 'Invalid input; `field` names the culprit',
    content: { 'application/json': { schema: S.ErrorResponse } },
  },
  503: {
    description: 'Queue full (see Retry-After) or not ready',
    content: { 'application/json': { schema: S.ErrorResponse } },
  },
};

const jsonBody = <T extends z.ZodType>(schema: T) => ({
  body: { content: { 'application/json': { schema } }, required: true },
});

const predictRoute = createRoute({
  method: 'post',
  path: '/predict',
  summary: 'Predict one row (or several, as number[][]) with a model',
  request: jsonBody(S.PredictRequest),
  responses: {
    200: { description: 'Prediction', content: { 'application/json': { schema: S.PredictResponse } } },
    ...errorResponses,
  },
});

const batchRoute = createRoute({
  method: 'post',
  path: '/predict/batch',
  summary: 'Predict many rows: {"requests": [{"features": …}]} or {"instances": [[…]]}',
  request: jsonBody(S.BatchRequest),
  responses: {
    200: {
      description: 'One prediction per row, in order',
      content: { 'application/json': { schema: S.BatchResponse } },
    },
    ...errorResponses,
  },
});

const v2Params = z.object({ name: z.string(), version: z.string().optional() });
const v2InferRoute = (path: string) =>
  createRoute({
    method: 'post',
    path,
    summary: 'Open Inference Protocol v2 inference',
    request: { params: v2Params, ...jsonBody(S.V2InferRequest) },
    responses: {
      200: { description: 'Output tensors', content: { 'application/json': { schema: S.V2InferResponse } } },
      400: { description: 'Invalid request', content: { 'application/json': { schema: S.V2Error } } },
    },
  });

export function createApp(deps: AppDeps, config: AppConfig) {
  const { registry, predictor, metrics } = deps;
  const app = new OpenAPIHono({
    defaultHook: (result) => {
      if (!result.success) {
        const issue = result.error.issues[0]!;
        const field = fieldName(issue.path);
        throw new ServeError('ERR_VALIDATION', field ? `${field}: ${issue.message}` : issue.message, {
          field: field || undefined,
        });
      }
    },
  });

  app.use('*', async function recordRequest(c, next) {
    const started = performance.now();
    await next();
    const route =
      c.res.status === 404 && c.get('errorCode' as never) === 'ERR_NOT_FOUND'
        ? 'unmatched'
        : routePath(c, -1);
    metrics.request(route, c.req.method, c.res.status, (performance.now() - started) / 1000);
  });

  app.onError((err, c) => {
    let e: ServeError;
    if (err instanceof ServeError) e = err;
    else {
      console.error('unexpected error', err);
      e = new ServeError('ERR_INTERNAL', 'internal error');
    }
    metrics.error(e.code);
    c.set('errorCode' as never, e.code as never);
    if (e.retryAfterSeconds !== undefined) c.header('Retry-After', String(e.retryAfterSeconds));
    // The rest of an oversized body was never read: the connection cannot carry another request.
    if (e.code === 'ERR_BODY_TOO_LARGE') c.header('Connection', 'close');
    const status = e.status as 400;
    if (c.req.path.startsWith('/v2')) return c.json({ error: e.message }, status);
    return c.json(
      { error: { code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}) } },
      status,
    );
  });

  app.notFound((c) => {
    c.set('errorCode' as never, 'ERR_NOT_FOUND' as never);
    metrics.error('ERR_NOT_FOUND');
    const message = `no route ${c.req.method} ${c.req.path}`;
    if (c.req.path.startsWith('/v2')) return c.json({ error: message }, 404);
    return c.json({ error: { code: 'ERR_NOT_FOUND' satisfies ErrorCode, message } }, 404);
  });

  const notReady = () =>
    new ServeError('ERR_NOT_READY', 'models are still loading, or the server is shutting down', {
      retryAfterSeconds: 1,
    });

  /** The client's id (body, then X-Request-Id, which is echoed back) or a fresh UUID. */
  const requestId = (c: Context, fromBody: string | undefined) => {
    if (fromBody !== undefined) return fromBody;
    const header = c.req.header('x-request-id');
    if (header === undefined) return crypto.randomUUID();
    c.header('X-Request-Id', header);
    return header;
  };

  const inference = createInference(predictor, deps.cache, { singleFlight: config.singleFlight });

  /** The tabular models' outputs /predict reads. */
  const predictOutputs = (entry: ModelEntry) =>
    [entry.predictionOutput, entry.probabilityOutput].filter((n): n is string => n !== undefined);

  /** `listField` names the list of rows (for errors about all of them), `fieldOf` one row. */
  const predictRows = async (
    entry: ModelEntry,
    rows: readonly unknown[],
    listField: string,
    fieldOf: (r: number) => string,
    useCache: boolean,
  ): Promise<{ predictions: RowPrediction[]; tiers: InferResult['tiers'] }> => {
    const spec = requireTabular(entry);
    if (rows.length === 0) throw invalid('ERR_VALIDATION', listField, 'at least one row is required');
    if (rows.length > config.maxRowsPerRequest) {
      throw invalid(
        'ERR_TOO_MANY_ROWS',
        listField,
        `${rows.length} rows; at most ${config.maxRowsPerRequest} per request`,
      );
    }
    const tensor = rowsToTensor(spec, rows, fieldOf);
    const result = await inference.run(entry, { [spec.input]: tensor }, rows.length, {
      useCache,
      outputs: predictOutputs(entry),
    });
    metrics.rows(entry.name, entry.version, rows.length);
    return { predictions: toRowPredictions(entry, result.outputs, rows.length), tiers: result.tiers };
  };

  const audit = (
    c: Context,
    route: string,
    entry: ModelEntry,
    requestId: string,
    input: unknown,
    output: unknown,
    rows: number,
    latencyMs: number,
    tiers: InferResult['tiers'],
  ) => {
    deps.audit?.record({
      id: crypto.randomUUID(),
      request_id: requestId,
      time: new Date().toISOString(),
      route,
      model: entry.name,
      model_version: entry.version,
      model_sha256: entry.sha256,
      input,
      output,
      rows,
      latency_ms: latencyMs,
      cache: cacheSummary(tiers),
      status: 200,
      client_id: c.req.header('x-client-id') ?? null,
    });
  };

  for (const route of [
    predictRoute,
    batchRoute,
    v2InferRoute('/v2/models/{name}/infer'),
    v2InferRoute('/v2/models/{name}/versions/{version}/infer'),
  ]) {
    app.openAPIRegistry.registerPath(route);
  }

  const tooLarge = () =>
    new ServeError('ERR_BODY_TOO_LARGE', `body is over ${config.maxBodyBytes} bytes`, { field: 'body' });

  /**
   * The JSON body of a POST, checked for type and size, then against its schema. Done inline rather than as
   * middleware: on the hot path every layer costs.
   */
  const readJson = async <T extends z.ZodType>(c: Context, schema: T): Promise<z.output<T>> => {
    // Every prediction route reads its body here first: none answers before the models are ready.
    if (!deps.isReady()) throw notReady();
    const type = c.req.header('content-type');
    if (!type || !JSON_TYPE.test(type)) {
      throw new ServeError(
        'ERR_CONTENT_TYPE',
        `Content-Type must be application/json, got ${type ?? 'none'}`,
        {
          field: 'content-type',
        },
      );
    }
    const declared = c.req.header('content-length');
    let text: string;
    if (declared !== undefined) {
      if (Number(declared) > config.maxBodyBytes) throw tooLarge();
      text = await c.req.text();
    } else {
      text = await readLimited(c.req.raw.body, config.maxBodyBytes, tooLarge);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ServeError('ERR_BAD_JSON', `malformed JSON body: ${(err as Error).message}`, {
        field: 'body',
      });
    }
    const parsed = schema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      const field = fieldName(issue.path);
      throw new ServeError('ERR_VALIDATION', field ? `${field}: ${issue.message}` : issue.message, {
        field: field || undefined,
      });
    }
    return parsed.data;
  };

  app.post('/predict', async (c) => {
    const started = performance.now();
    const body = await readJson(c, S.PredictRequest);
    const id = requestId(c, body.request_id);
    const entry = registry.resolve(body.model, body.version);
    const { features } = body;
    if (features === undefined) throw invalid('ERR_VALIDATION', 'features', 'features is required');
    const useCache = body.use_cache !== false;
    const several = Array.isArray(features) && Array.isArray(features[0]);
    // Explicit literals, not spreads: on Node 20 an object spread costs several µs per response.
    if (several) {
      const { predictions, tiers } = await predictRows(
        entry,
        features,
        'features',
        (r) => `features[${r}]`,
        useCache,
      );
      const latency = round3(performance.now() - started);
      const cachedRows = tiers ? tiers.filter((t) => t !== undefined).length : 0;
      audit(c, '/predict', entry, id, features, predictions, predictions.length, latency, tiers);
      return c.json({
        request_id: id,
        model: entry.name,
        model_version: entry.version,
        predictions,
        latency_ms: latency,
        cached: cachedRows === predictions.length,
        cached_rows: cachedRows,
        timestamp: new Date().toISOString(),
      });
    }
    const { predictions, tiers } = await predictRows(
      entry,
      [features],
      'features',
      () => 'features',
      useCache,
    );
    const one = predictions[0]!;
    const tier = tiers?.[0];
    const latency = round3(performance.now() - started);
    audit(c, '/predict', entry, id, features, one, 1, latency, tiers);
    return c.json({
      request_id: id,
      model: entry.name,
      model_version: entry.version,
      prediction: one.prediction,
      label: one.label,
      probability: one.probability,
      probabilities: one.probabilities,
      latency_ms: latency,
      cached: tier !== undefined,
      cache_tier: tier ?? null,
      timestamp: new Date().toISOString(),
    });
  });

  app.post('/predict/batch', async (c) => {
    const started = performance.now();
    const body = await readJson(c, S.BatchRequest);
    const id = requestId(c, body.request_id);
    const entry = registry.resolve(body.model, body.version);
    const useCache = body.use_cache !== false;
    if (body.requests && body.instances) {
      throw invalid('ERR_VALIDATION', 'instances', 'send either requests or instances, not both');
    }
    let input: unknown[];
    let result: Awaited<ReturnType<typeof predictRows>>;
    if (body.requests) {
      input = body.requests.map((r, i) => {
        if (r.features === undefined) {
          throw invalid('ERR_VALIDATION', `requests[${i}].features`, `requests[${i}].features is required`);
        }
        return r.features;
      });
      result = await predictRows(entry, input, 'requests', (r) => `requests[${r}].features`, useCache);
    } else if (body.instances) {
      input = body.instances;
      result = await predictRows(entry, input, 'instances', (r) => `instances[${r}]`, useCache);
    } else {
      throw invalid('ERR_VALIDATION', 'requests', 'requests (or instances) is required');
    }
    const { predictions, tiers } = result;
    const latency = round3(performance.now() - started);
    const cachedRows = tiers ? tiers.filter((t) => t !== undefined).length : 0;
    audit(c, '/predict/batch', entry, id, input, predictions, predictions.length, latency, tiers);
    return c.json({
      request_id: id,
      model: entry.name,
      model_version: entry.version,
      count: predictions.length,
      predictions,
      latency_ms: latency,
      cached: cachedRows === predictions.length,
      cached_rows: cachedRows,
      timestamp: new Date().toISOString(),
    });
  });

  for (const path of ['/v2/models/:name/infer', '/v2/models/:name/versions/:version/infer']) {
    app.post(path, async (c) => {
      const started = performance.now();
      const name = c.req.param('name')!;
      const version = c.req.param('version');
      const body = await readJson(c, S.V2InferRequest);
      const entry = registry.resolve(name, version);
      const outputNames = selectV2Outputs(entry, body.outputs);
      const { tensors, rows } = decodeV2Inputs(entry, body.inputs);
      if (entry.batchable && rows > config.maxRowsPerRequest) {
        throw invalid(
          'ERR_TOO_MANY_ROWS',
          'inputs',
          `${rows} rows; at most ${config.maxRowsPerRequest} per request`,
        );
      }
      const useCache = body.parameters?.use_cache !== false;
      const { outputs, tiers } = await inference.run(entry, tensors, rows, {
        useCache,
        outputs: outputNames,
      });
      metrics.rows(entry.name, entry.version, rows);
      const encoded = outputNames.map((n) => encodeV2Output(n, outputs[n]!));
      const cachedRows = tiers ? tiers.filter((t) => t !== undefined).length : 0;
      audit(
        c,
        c.req.routePath,
        entry,
        body.id ?? crypto.randomUUID(),
        body.inputs,
        encoded,
        rows,
        round3(performance.now() - started),
        tiers,
      );
      return c.json({
        model_name: entry.name,
        model_version: entry.version,
        id: body.id,
        parameters: { cached_rows: cachedRows },
        outputs: encoded,
      });
    });
  }

  // ---- metadata, health, metrics -------------------------------------------------------------------
  const describeVersion = (e: ModelEntry) => ({
    version: e.version,
    sha256: e.sha256,
    inputs: e.signature.inputs,
    outputs: e.signature.outputs,
    feature_names: e.tabular?.featureNames ?? null,
    feature_count: e.tabular?.features ?? null,
    class_labels: e.classLabels ?? null,
    batchable: e.batchable,
    load_seconds: Math.round(e.loadSeconds * 1e4) / 1e4,
    description: e.metadata.description ?? null,
    training: e.metadata.training ?? null,
    metrics: e.metadata.metrics ?? null,
    created: e.metadata.created ?? null,
  });

  const describeModel = (name: string) => {
    const versions = registry.versions(name);
    if (versions.length === 0) registry.resolve(name); // throws ERR_MODEL_NOT_FOUND
    return { name, default_version: versions.at(-1)!.version, versions: versions.map(describeVersion) };
  };

  const v2Meta = (e: ModelEntry) => ({
    name: e.name,
    versions: registry.versions(e.name).map((v) => v.version),
    platform: 'onnxruntime_onnx',
    inputs: e.signature.inputs.map((t) => ({
      name: t.name,
      datatype: toV2Datatype(t.type!),
      shape: t.shape.map((d) => (typeof d === 'number' ? d : -1)),
    })),
    outputs: e.signature.outputs.map((t) => ({
      name: t.name,
      datatype: toV2Datatype(t.type!),
      shape: t.shape.map((d) => (typeof d === 'number' ? d : -1)),
    })),
  });

  app.get('/', (c) =>
    c.json({
      name: 'onnx-serve',
      version: config.serverVersion,
      default_model: registry.defaultModel ?? null,
      endpoints: [
        '/predict',
        '/predict/batch',
        '/models',
        '/health',
        '/metrics',
        '/v2',
        '/docs',
        '/openapi.json',
      ],
    }),
  );
  app.get('/health', async (c) => {
    const ready = deps.isReady();
    const dflt = registry.defaultModel ? registry.resolve() : undefined;
    const body = {
      status: ready ? 'healthy' : 'unavailable',
      ready,
      model_version: dflt?.version ?? null,
      models: Object.fromEntries(
        registry.names().map((n) => [n, registry.versions(n).map((e) => e.version)]),
      ),
      queued_rows: predictor.queuedRows(),
      ...(deps.health ? await deps.health() : {}),
      timestamp: new Date().toISOString(),
    };
    return c.json(body, ready ? 200 : 503);
  });
  app.get('/health/live', (c) => c.json({ status: 'live' }));
  app.get('/health/ready', (c) => {
    if (!deps.isReady()) throw notReady();
    return c.json({ status: 'ready' });
  });
  app.get('/models', (c) =>
    c.json({
      default_model: registry.defaultModel ?? null,
      models: registry.names().map((n) => {
        const versions = registry.versions(n);
        return {
          name: n,
          versions: versions.map((v) => v.version),
          default_version: versions.at(-1)!.version,
          description: versions.at(-1)!.metadata.description ?? null,
        };
      }),
    }),
  );
  app.get('/models/:name', (c) => c.json(describeModel(c.req.param('name'))));
  const seedModelInfo = (c: Context) => {
    const e = registry.resolve(c.req.query('model'), c.req.query('version'));
    return c.json({ name: e.name, ...describeVersion(e) });
  };
  app.get('/model/info', seedModelInfo);
  app.get('/model-info', seedModelInfo);

  app.get('/metrics', async (c) => {
    const { contentType, body } = await metrics.render();
    return c.body(body, 200, { 'Content-Type': contentType });
  });

  app.get('/v2', (c) => c.json({ name: 'onnx-serve', version: config.serverVersion, extensions: [] }));
  app.get('/v2/health/live', (c) => c.json({ live: true }));
  app.get('/v2/health/ready', (c) => {
    if (!deps.isReady()) throw notReady();
    return c.json({ ready: true });
  });
  app.get('/v2/models/:name', (c) => c.json(v2Meta(registry.resolve(c.req.param('name')))));
  app.get('/v2/models/:name/versions/:version', (c) =>
    c.json(v2Meta(registry.resolve(c.req.param('name'), c.req.param('version')))),
  );
  const modelReady = (c: Context) => {
    registry.resolve(c.req.param('name'), c.req.param('version'));
    if (!deps.isReady()) throw notReady();
    return c.json({ name: c.req.param('name'), ready: true });
  };
  app.get('/v2/models/:name/ready', modelReady);
  app.get('/v2/models/:name/versions/:version/ready', modelReady);

  app.doc('/openapi.json', {
    openapi: '3.0.3',
    info: {
      title: 'onnx-serve',
      version: config.serverVersion,
      description: 'ONNX model serving: seed-compatible /predict and Open Inference Protocol v2.',
    },
  });
  app.get('/docs', swaggerUI({ url: '/openapi.json' }));

  return app;
}
