/** `/predict` and `/predict/batch`: the request shapes seed clients already send. */
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { jsonInSlices, jsonWithRaw } from '../answer.js';
import { invalid, ServeError } from '../errors.js';
import { rowsToTensor } from '../features.js';
import type { InferResult } from '../inference.js';
import { chooseModel } from '../model-choice.js';
import { errorResponses, json, jsonBody, PREDICTION_ERRORS, register, secured } from '../openapi.js';
import { type RowPrediction, toRowPredictions } from '../prediction.js';
import type { ModelEntry, TabularInput } from '../registry.js';
import * as S from '../schemas.js';
import type { Tensor } from '../tensor.js';
import type { TraceScope } from '../tracing.js';
import { LARGE_ANSWER_ROWS, type RouteContext } from './context.js';

export const predictRoute = createRoute({
  method: 'post',
  path: '/predict',
  tags: ['predictions'],
  ...secured('predict'),
  summary: 'Predict one row (or several, as number[][])',
  description:
    'Seed clients’ bodies unchanged: named features (seeds 000, 002), an array in the model’s order ' +
    '(seeds 003, 004), or rows as number[][] (seed 001). With no `model`, the features choose it.',
  request: jsonBody(S.PredictRequest, S.PREDICT_EXAMPLES),
  responses: {
    200: json(S.PredictResponse, 'The prediction; `predictions` when several rows were sent'),
    ...errorResponses(...PREDICTION_ERRORS),
  },
});

export const batchRoute = createRoute({
  method: 'post',
  path: '/predict/batch',
  tags: ['predictions'],
  ...secured('predict'),
  summary: 'Predict many rows: {"requests": [{"features": …}]} or {"instances": [[…]]}',
  request: jsonBody(S.BatchRequest, S.BATCH_EXAMPLES),
  responses: {
    200: json(S.BatchResponse, 'One prediction per row, in order'),
    ...errorResponses(...PREDICTION_ERRORS),
  },
});

function requireTabular(entry: ModelEntry): TabularInput {
  if (!entry.tabular) {
    throw new ServeError(
      'ERR_INPUT_SHAPE',
      `model ${entry.name} does not take a single row of features: use /v2/models/${entry.name}/infer`,
      { field: 'model' },
    );
  }
  return entry.tabular;
}

export function predictionRoutes(ctx: RouteContext) {
  const { deps, config, inference, readJson, answer } = ctx;
  const { registry, metrics } = deps;
  const probability = config.probability ?? 'positive';
  const app = new OpenAPIHono();

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
    deadline: number,
    trace: TraceScope | undefined,
  ): Promise<{
    predictions: RowPrediction[];
    tiers: InferResult['tiers'];
    inputs: Record<string, Tensor>;
    outputs: Record<string, Tensor>;
  }> => {
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
    const inputs = { [spec.input]: tensor };
    const shadow = ctx.shadow(entry, inputs, rows.length);
    const ran = performance.now();
    const result = await inference.run(entry, inputs, rows.length, {
      useCache,
      outputs: predictOutputs(entry),
      deadline,
      trace,
    });
    shadow?.(
      result.outputs,
      result.tiers?.some((t) => t !== undefined) ? undefined : performance.now() - ran,
    );
    metrics.rows(entry.name, entry.version, rows.length);
    return {
      predictions: toRowPredictions(entry, result.outputs, rows.length, probability),
      tiers: result.tiers,
      inputs,
      outputs: result.outputs,
    };
  };

  register(app, predictRoute, async (c) => {
    const started = performance.now();
    ctx.requireReady();
    const body = await readJson(c, S.PredictRequest);
    const requestId = ctx.requestId(c, body.request_id);
    const { features } = body;
    const entry = ctx.chosen(c, chooseModel(registry, body.model, body.version, features, ctx.caller(c)));
    const useCache = body.use_cache !== false;
    const deadline = ctx.deadline(c, started, body.timeout_ms);
    if (Array.isArray(features) && Array.isArray(features[0])) {
      const { predictions, tiers, inputs, outputs } = await predictRows(
        entry,
        features,
        'features',
        (r) => `features[${r}]`,
        useCache,
        deadline,
        ctx.trace(c),
      );
      const rows = predictions.length;
      if (rows >= LARGE_ANSWER_ROWS) await ctx.giveWay(c);
      const a = { route: '/predict', entry, requestId, inputs, outputs, rows, started, tiers };
      return answer(c, a, (latencyMs, cachedRows) => ({
        body: {
          request_id: requestId,
          model: entry.name,
          model_version: entry.version,
          predictions,
          latency_ms: latencyMs,
          cached: cachedRows === rows,
          cached_rows: cachedRows,
          timestamp: new Date().toISOString(),
        },
      }));
    }
    const { predictions, tiers, inputs, outputs } = await predictRows(
      entry,
      [features],
      'features',
      () => 'features',
      useCache,
      deadline,
      ctx.trace(c),
    );
    const one = predictions[0]!;
    const tier = tiers?.[0];
    const a = { route: '/predict', entry, requestId, inputs, outputs, rows: 1, started, tiers };
    // Explicit literals, not spreads: on Node 20 an object spread costs several µs per response.
    return answer(c, a, (latencyMs) => ({
      body: {
        request_id: requestId,
        model: entry.name,
        model_version: entry.version,
        prediction: one.prediction,
        label: one.label,
        probability: one.probability,
        probabilities: one.probabilities,
        latency_ms: latencyMs,
        cached: tier !== undefined,
        cache_tier: tier ?? null,
        timestamp: new Date().toISOString(),
      },
    }));
  });

  register(app, batchRoute, async (c) => {
    const started = performance.now();
    ctx.requireReady();
    const body = await readJson(c, S.BatchRequest);
    const requestId = ctx.requestId(c, body.request_id);
    const useCache = body.use_cache !== false;
    if (body.requests && body.instances) {
      throw invalid('ERR_VALIDATION', 'instances', 'send either requests or instances, not both');
    }
    let input: unknown[];
    let listField: string;
    let fieldOf: (r: number) => string;
    if (body.requests) {
      input = body.requests.map((r) => r.features);
      listField = 'requests';
      fieldOf = (r) => `requests[${r}].features`;
    } else if (body.instances) {
      input = body.instances;
      listField = 'instances';
      fieldOf = (r) => `instances[${r}]`;
    } else {
      throw invalid('ERR_VALIDATION', 'requests', 'requests (or instances) is required');
    }
    const entry = ctx.chosen(c, chooseModel(registry, body.model, body.version, input[0], ctx.caller(c)));
    const deadline = ctx.deadline(c, started, body.timeout_ms);
    const { predictions, tiers, inputs, outputs } = await predictRows(
      entry,
      input,
      listField,
      fieldOf,
      useCache,
      deadline,
      ctx.trace(c),
    );
    const rows = predictions.length;
    // A large answer's text is made in slices, giving way between them (see jsonInSlices).
    const listed =
      rows >= LARGE_ANSWER_ROWS ? await jsonInSlices(predictions, () => ctx.giveWay(c)) : undefined;
    const a = { route: '/predict/batch', entry, requestId, inputs, outputs, rows, started, tiers };
    return answer(c, a, (latencyMs, cachedRows) => ({
      body: {
        request_id: requestId,
        model: entry.name,
        model_version: entry.version,
        count: rows,
        predictions,
        latency_ms: latencyMs,
        cached: cachedRows === rows,
        cached_rows: cachedRows,
        timestamp: new Date().toISOString(),
      },
      send: listed
        ? (c, body) =>
            c.body(jsonWithRaw(body as Record<string, unknown>, 'predictions', listed), 200, {
              'Content-Type': 'application/json',
            })
        : undefined,
    }));
  });

  return app;
}
