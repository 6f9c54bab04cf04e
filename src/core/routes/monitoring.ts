/**
 * Seeing how models behave: drift per model version (`GET /models/{name}/drift`, and the admin routes that
 * set a version's reference), and the seeds' statistics routes, seed 002's `GET /stats` and seed 001's
 * `GET /metrics/summary`, read from the per-version statistics the server keeps anyway (model-stats.ts).
 */
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import {
  buildReference,
  type DriftMonitor,
  parseReference,
  scoreOfProbabilities,
  scoreSpec,
} from '../drift.js';
import { invalid } from '../errors.js';
import { rowsToTensor } from '../features.js';
import { validationError } from '../http.js';
import type { ModelStat } from '../model-stats.js';
import { ACCESS_ERRORS, errorResponses, json, jsonBody, register, secured } from '../openapi.js';
import type { ModelEntry } from '../registry.js';
import * as S from '../schemas.js';
import type { RouteContext } from './context.js';

const tags = ['monitoring'];

const DriftSeries = z.object({
  psi: z.number(),
  ks: z.number(),
  ks_p_value: z.number(),
  mean: z.number().nullable(),
  std: z.number().nullable(),
  reference_mean: z.number().nullable(),
  reference_std: z.number().nullable(),
  drifted: z.boolean().openapi({ description: 'PSI above the threshold (DRIFT_PSI_THRESHOLD)' }),
});

export const DriftReportSchema = z
  .object({
    model: z.string(),
    version: z.string(),
    status: z.enum(['ok', 'drift', 'collecting', 'no_reference', 'unsupported']).openapi({
      description:
        '`collecting`: fewer rows in the window than DRIFT_MIN_ROWS; `no_reference`: none yet (see `capturing`); `unsupported`: not a tabular model',
    }),
    reference: z
      .object({ source: z.enum(['training', 'uploaded', 'captured']), rows: z.number() })
      .nullable(),
    problem: z.string().nullable(),
    capturing: z.object({ rows: z.number(), target: z.number() }).nullable(),
    window: z.object({
      rows: z.number(),
      target_rows: z.number(),
      min_rows: z.number(),
      rows_seen: z.number(),
    }),
    psi_threshold: z.number(),
    features: z.array(z.object({ name: z.string(), ...DriftSeries.shape })),
    prediction: DriftSeries.nullable(),
    classes: z
      .object({
        psi: z.number(),
        proportions: z.array(z.number()),
        reference_proportions: z.array(z.number()),
        drifted: z.boolean(),
      })
      .nullable(),
    drifted_features: z.array(z.string()),
  })
  .openapi('DriftReport');

const Distribution = z.object({
  cuts: z
    .array(z.number())
    .openapi({ description: 'Ascending cut points: bin i holds cuts[i-1] < v <= cuts[i]' }),
  proportions: z
    .array(z.number())
    .openapi({ description: 'Each bin’s share: one more than the cuts, sum 1' }),
  mean: z.number().nullable().optional(),
  std: z.number().nullable().optional(),
});

const ReferenceRequest = z
  .object({
    reference: z
      .object({
        rows: z.number().int().optional(),
        features: z.array(Distribution.extend({ name: z.string().optional() })),
        prediction: Distribution.nullable().optional(),
        classes: z.array(z.number()).nullable().optional(),
      })
      .optional()
      .openapi({ description: 'A reference as the trainer writes it into model.json (`drift_reference`)' }),
    rows: z.array(z.unknown()).optional().openapi({
      description:
        'Or rows of training data (each an array in the model’s feature order, or named features): the server bins them, and runs the model on them for the prediction reference',
    }),
  })
  .strict()
  .openapi('DriftReferenceRequest');

const ReferenceResult = z
  .object({
    model: z.string(),
    version: z.string(),
    reference: z.object({ source: z.enum(['training', 'uploaded', 'captured']), rows: z.number() }),
    persisted: z
      .boolean()
      .openapi({ description: 'Written into the version’s model.json (else kept until restart)' }),
  })
  .openapi('DriftReferenceResult');

const CaptureRequest = z
  .object({ rows: z.number().int().min(100).max(1_000_000).optional().openapi({ example: 1000 }) })
  .strict()
  .openapi('DriftCaptureRequest');

const CaptureResult = z
  .object({
    model: z.string(),
    version: z.string(),
    capturing: z.object({ rows: z.number(), target: z.number() }),
  })
  .openapi('DriftCaptureResult');

const StatsModel = z.object({
  name: z.string(),
  version: z.string(),
  requests: z.number().int().openapi({ description: 'Prediction requests answered' }),
  failed_requests: z.number().int(),
  rows_computed: z.number().int().openapi({ description: 'Rows the model ran (cache hits excluded)' }),
  average_latency_ms: z.number().nullable(),
  last_inference: z.string().nullable(),
  drift: z
    .object({
      status: z.string(),
      window_rows: z.number(),
      max_psi: z.number().nullable(),
      drifted_features: z.array(z.string()),
      prediction_mean: z.number().nullable(),
    })
    .nullable(),
});

export const StatsSchema = z
  .object({
    status: z.enum(['healthy', 'unavailable']),
    uptime_seconds: z.number(),
    total_requests: z.number().int(),
    failed_requests: z.number().int(),
    total_predictions: z.number().int().openapi({ description: 'Rows the models ran (cache hits excluded)' }),
    average_latency_ms: z.number().nullable(),
    drift_detected: z.boolean(),
    models: z.array(StatsModel),
    timestamp: z.string(),
  })
  .openapi('Stats', { description: 'Seed 002’s monitoring statistics, per loaded model version.' });

export const MetricsSummarySchema = z
  .object({
    prediction_count: z.number().int().openapi({ description: 'Prediction requests answered' }),
    prediction_rows: z.number().int(),
    error_count: z.number().int(),
    training_count: z.literal(0).openapi({ description: 'This server does not train: always 0' }),
    average_prediction_time_ms: z.number().nullable().openapi({ description: 'Mean request duration' }),
    average_inference_time_ms: z.number().nullable().openapi({ description: 'Mean model run, per request' }),
    average_queue_time_ms: z.number().nullable(),
    average_training_time_ms: z.null(),
    uptime_seconds: z.number(),
    models: z.record(
      z.string(),
      z.object({ prediction_count: z.number().int(), average_prediction_time_ms: z.number().nullable() }),
    ),
  })
  .openapi('MetricsSummary', { description: 'Seed 001’s application metrics summary.' });

const round3 = (x: number) => Math.round(x * 1000) / 1000;
const meanMs = (ns: number, count: number) => (count > 0 ? round3(ns / count / 1e6) : null);

/** A loaded version by name and (optional) version, or the one serving. */
const versionOf = (ctx: RouteContext, c: Context) => {
  ctx.requireLoaded();
  const name = c.req.param('name')!;
  const q = S.ModelQuery.pick({ version: true }).safeParse(c.req.query());
  if (!q.success) throw validationError(q.error);
  return ctx.deps.registry.resolve(name, c.req.param('version') ?? q.data.version);
};

/** A reference built from uploaded rows of training data, with the model's own predictions on them. */
async function referenceFromRows(ctx: RouteContext, entry: ModelEntry, rows: readonly unknown[]) {
  const tabular = entry.tabular!;
  if (rows.length < 100)
    throw invalid('ERR_VALIDATION', 'rows', `${rows.length} rows; at least 100 are needed`);
  const tensor = rowsToTensor(tabular, rows, (r) => `rows[${r}]`);
  const f = tabular.features;
  const columns = Array.from({ length: f }, (_, k) =>
    Array.from({ length: rows.length }, (_, r) => Number(tensor.data[r * f + k])),
  );
  const score = scoreSpec(entry);
  let scores: number[] | undefined;
  let classes: { values: number[]; count: number } | undefined;
  if (score) {
    const outputs = await ctx.deps.predictor.infer(entry, { [tabular.input]: tensor }, rows.length);
    const y = outputs[score.output];
    if (y && y.type !== 'int64') {
      const p = y.data as Float32Array;
      if (score.kind === 'probabilities') {
        scores = Array.from({ length: rows.length }, (_, r) =>
          scoreOfProbabilities(p, r * score.classes, score.classes),
        );
        classes = {
          values: Array.from({ length: rows.length }, (_, r) => {
            let best = 0;
            for (let k = 1; k < score.classes; k++)
              if (p[r * score.classes + k]! > p[r * score.classes + best]!) best = k;
            return best;
          }),
          count: score.classes,
        };
      } else {
        const per = p.length / rows.length;
        scores = Array.from({ length: rows.length }, (_, r) => p[r * per]!);
      }
    }
  }
  return buildReference({
    source: 'uploaded',
    featureNames: Array.from({ length: f }, (_, i) => tabular.featureNames?.[i] ?? String(i)),
    columns,
    scores,
    classes,
  });
}

function driftRoutes(ctx: RouteContext, app: OpenAPIHono, drift: DriftMonitor) {
  register(
    app,
    createRoute({
      method: 'get',
      path: '/models/{name}/drift',
      tags,
      summary:
        'Drift of the serving version (or `?version=`): PSI and KS per feature and for the predictions',
      description:
        'Each input feature’s distribution, and the predictions’, over the last DRIFT_WINDOW_ROWS rows the model ran, against the version’s reference (from its training data, uploaded, or captured from its first rows).',
      ...secured('predict'),
      request: { params: S.ModelParams, query: S.ModelQuery.pick({ version: true }) },
      responses: {
        200: json(DriftReportSchema, 'The version’s drift'),
        ...errorResponses(...ACCESS_ERRORS, 404, 422, 503),
      },
    }),
    (c) => c.json(drift.report(versionOf(ctx, c))),
  );

  register(
    app,
    createRoute({
      method: 'put',
      path: '/models/{name}/versions/{version}/drift/reference',
      tags: ['admin'],
      summary: 'Set a version’s drift reference: binned, or rows of training data (admin)',
      description:
        'For a model whose model.json has none (a foreign model), or to replace it. Kept in the version’s model.json; its drift window starts again.',
      ...secured('admin'),
      request: { params: S.ModelVersionParams, ...jsonBody(ReferenceRequest) },
      responses: {
        200: json(ReferenceResult, 'The reference now in use'),
        ...errorResponses(...ACCESS_ERRORS, 400, 404, 413, 415, 422, 503),
      },
    }),
    async (c) => {
      const entry = versionOf(ctx, c);
      const req = await ctx.readJson(c, ReferenceRequest);
      if ((req.reference === undefined) === (req.rows === undefined)) {
        throw invalid('ERR_VALIDATION', 'reference', 'send either reference or rows');
      }
      if (!entry.tabular) {
        throw invalid(
          'ERR_INPUT_SHAPE',
          'model',
          `model ${entry.name} does not take rows of features: drift is measured on tabular models`,
        );
      }
      const reference = req.rows
        ? await referenceFromRows(ctx, entry, req.rows)
        : parseReference(entry, req.reference, 'reference', 'uploaded');
      const persisted = await drift.setReference(entry, reference);
      return c.json({
        model: entry.name,
        version: entry.version,
        reference: { source: reference.source, rows: reference.rows },
        persisted,
      });
    },
  );

  register(
    app,
    createRoute({
      method: 'post',
      path: '/models/{name}/versions/{version}/drift/capture',
      tags: ['admin'],
      summary: 'Capture a version’s drift reference from its next rows of traffic (admin)',
      ...secured('admin'),
      request: { params: S.ModelVersionParams, ...jsonBody(CaptureRequest) },
      responses: {
        200: json(CaptureResult, 'Capturing'),
        ...errorResponses(...ACCESS_ERRORS, 400, 404, 413, 415, 422, 503),
      },
    }),
    async (c) => {
      const entry = versionOf(ctx, c);
      const req = await ctx.readJson(c, CaptureRequest);
      const rows = req.rows ?? 1000;
      drift.startCapture(entry, rows);
      return c.json({ model: entry.name, version: entry.version, capturing: { rows: 0, target: rows } });
    },
  );
}

export function monitoringRoutes(ctx: RouteContext) {
  const { deps } = ctx;
  const app = new OpenAPIHono();
  const startedAt = Date.now();
  const uptime = () => Math.round((Date.now() - startedAt) / 100) / 10;
  const snapshot = (): ModelStat[] => deps.stats?.snapshot(deps.registry.all()) ?? [];

  if (deps.drift) driftRoutes(ctx, app, deps.drift);

  register(
    app,
    createRoute({
      method: 'get',
      path: '/stats',
      tags,
      summary: 'Seed 002’s statistics: requests, predictions, latency and drift per model version',
      ...secured('predict'),
      responses: { 200: json(StatsSchema, 'Statistics'), ...errorResponses(...ACCESS_ERRORS) },
    }),
    (c) => {
      const stats = snapshot();
      const reports = new Map(
        (deps.drift?.snapshot(deps.registry.all()) ?? []).map((r) => [`${r.model}\0${r.version}`, r]),
      );
      let requests = 0;
      let failed = 0;
      let rows = 0;
      let ns = 0;
      const models = stats.map((s) => {
        const st = s.inference_stats;
        requests += st.success.count;
        failed += st.fail.count;
        rows += s.inference_count;
        ns += st.success.ns;
        const r = reports.get(`${s.name}\0${s.version}`);
        const psis = r ? [...r.features.map((f) => f.psi), ...(r.prediction ? [r.prediction.psi] : [])] : [];
        return {
          name: s.name,
          version: s.version,
          requests: st.success.count,
          failed_requests: st.fail.count,
          rows_computed: s.inference_count,
          average_latency_ms: meanMs(st.success.ns, st.success.count),
          last_inference: s.last_inference > 0 ? new Date(s.last_inference).toISOString() : null,
          drift: r
            ? {
                status: r.status,
                window_rows: r.window.rows,
                max_psi: psis.length > 0 ? Math.max(...psis) : null,
                drifted_features: r.drifted_features,
                prediction_mean: r.prediction?.mean ?? null,
              }
            : null,
        };
      });
      return c.json({
        status: ctx.isReadyForTraffic() ? 'healthy' : 'unavailable',
        uptime_seconds: uptime(),
        total_requests: requests,
        failed_requests: failed,
        total_predictions: rows,
        average_latency_ms: meanMs(ns, requests),
        drift_detected: [...reports.values()].some((r) => r.status === 'drift'),
        models,
        timestamp: new Date().toISOString(),
      });
    },
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/metrics/summary',
      tags,
      summary: 'Seed 001’s metrics summary: prediction count, training count, average times',
      ...secured('predict'),
      responses: { 200: json(MetricsSummarySchema, 'Summary'), ...errorResponses(...ACCESS_ERRORS) },
    }),
    (c) => {
      const stats = snapshot();
      let count = 0;
      let errors = 0;
      let rows = 0;
      let ns = 0;
      let inferNs = 0;
      let queueNs = 0;
      let queueCount = 0;
      const models: Record<string, { prediction_count: number; average_prediction_time_ms: number | null }> =
        {};
      for (const s of stats) {
        const st = s.inference_stats;
        count += st.success.count;
        errors += st.fail.count;
        rows += s.inference_count;
        ns += st.success.ns;
        inferNs += st.compute_infer.ns;
        queueNs += st.queue.ns;
        queueCount += st.queue.count;
        models[`${s.name}:${s.version}`] = {
          prediction_count: st.success.count,
          average_prediction_time_ms: meanMs(st.success.ns, st.success.count),
        };
      }
      return c.json({
        prediction_count: count,
        prediction_rows: rows,
        error_count: errors,
        training_count: 0 as const,
        average_prediction_time_ms: meanMs(ns, count),
        average_inference_time_ms: meanMs(inferNs, queueCount),
        average_queue_time_ms: meanMs(queueNs, queueCount),
        average_training_time_ms: null,
        uptime_seconds: uptime(),
        models,
      });
    },
  );

  return app;
}

/** Seed 000's `drift_metrics` for /model/info: the window's prediction mean, spread and count, and its PSI. */
export function driftMetrics(drift: DriftMonitor | undefined, entry: ModelEntry) {
  if (!drift) return null;
  const summary = drift.summary(entry);
  if (!summary) return null;
  const r = drift.report(entry);
  return {
    ...summary,
    psi: r.prediction?.psi ?? null,
    drift_detected: r.status === 'drift',
    status: r.status,
  };
}
