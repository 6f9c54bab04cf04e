/**
 * Lifecycle and traffic routes (admin): a version's stage and its history, the traffic policy of a model
 * (one version, a weighted A/B split or canary, a shadow), the shadow's comparison, and seed 001's
 * `POST /model/load/{version}`. Each needs a key with the `admin` scope, like every admin route.
 */
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { API_KEY_VAR } from '../access.js';
import { ServeError } from '../errors.js';
import { STAGES, type TrafficPolicy } from '../lifecycle.js';
import { ACCESS_ERRORS, errorResponses, json, jsonBody, register, secured } from '../openapi.js';
import * as S from '../schemas.js';
import type { RouteContext } from './context.js';

const tags = ['lifecycle'];

const StageName = z.enum(STAGES);
const StageChange = z.object({
  model: z.string(),
  version: z.string(),
  stage: StageName,
  previous: StageName.nullable(),
  at: z.string(),
  by: z.string().nullable(),
  reason: z.string().nullable(),
});

const StageRequest = z
  .object({
    stage: StageName.openapi({ example: 'production' }),
    reason: z.string().max(500).optional().openapi({ example: 'AUC 0.91 on last week' }),
    archive_existing: z
      .boolean()
      .optional()
      .openapi({ description: 'Promoting to production archives the version that was (default true)' }),
  })
  .strict()
  .openapi('StageRequest');

const StageResult = z
  .object({
    model: z.string(),
    version: z.string(),
    stage: StageName,
    previous: StageName.nullable(),
    archived: z.array(z.string()),
    serving: z.string().nullable(),
    persisted: z.object({ store: z.boolean().nullable(), model_json: z.boolean().nullable() }),
  })
  .openapi('StageResult');

const StageInfo = z
  .object({
    model: z.string(),
    version: z.string(),
    stage: StageName.nullable(),
    history: z.array(StageChange),
  })
  .openapi('StageInfo');

const VersionText = z.string().min(1).max(64);
const TrafficRequest = z
  .object({
    version: VersionText.optional().openapi({ description: 'Every request naming no version gets this one' }),
    split: z
      .record(VersionText, z.number().finite().min(0).max(1e6))
      .optional()
      .openapi({ description: 'Version → weight: an A/B split, or a canary', example: { '2': 90, '3': 10 } }),
    sticky: z
      .boolean()
      .optional()
      .openapi({ description: 'The same caller keeps its version (default true)' }),
    shadow: z
      .object({
        version: VersionText,
        sample: z
          .number()
          .min(0)
          .max(1)
          .optional()
          .openapi({ description: 'Share of requests shadowed (default 1)' }),
      })
      .strict()
      .optional(),
  })
  .strict()
  .openapi('TrafficRequest');

const TrafficPolicySchema = z.object({
  split: z.record(z.string(), z.number()),
  sticky: z.boolean(),
  shadow: z.object({ version: z.string(), sample: z.number() }).optional(),
});
const TrafficInfo = z
  .object({
    model: z.string(),
    policy: TrafficPolicySchema.nullable(),
    serving: z.array(z.object({ version: z.string(), share: z.number() })),
    by: z.enum(['policy', 'stage', 'newest']),
    persisted: z.boolean().optional(),
  })
  .openapi('TrafficInfo');

const Latency = z.object({ count: z.number(), mean: z.number(), p50: z.number(), p99: z.number() });
const ShadowInfo = z
  .object({
    model: z.string(),
    shadow_version: z.string(),
    sample: z.number(),
    since: z.string(),
    requests: z.number(),
    rows: z.number(),
    failures: z.number(),
    skipped: z.number(),
    skipped_busy: z.number().openapi({
      description: 'requests not shadowed because the server had no spare capacity then (SHADOW_MAX_LOAD)',
    }),
    agreement_rate: z.number().nullable(),
    mean_probability_difference: z.number().nullable(),
    max_probability_difference: z.number().nullable(),
    latency_ms: z.record(z.string(), Latency),
  })
  .openapi('ShadowInfo');

const ERRORS = [...ACCESS_ERRORS, 404, 503] as const;

export function lifecycleRoutes(ctx: RouteContext) {
  const app = new OpenAPIHono();
  const lifecycle = ctx.deps.lifecycle;
  if (!lifecycle) return app;
  const who = (c: Context) => (c.get(API_KEY_VAR as never) as string | undefined) ?? null;

  register(
    app,
    createRoute({
      method: 'get',
      path: '/models/{name}/versions/{version}/stage',
      tags,
      summary: "A version's stage and the history of its changes (who, when, why), newest first",
      ...secured('admin'),
      request: { params: S.ModelVersionParams },
      responses: { 200: json(StageInfo, 'Stage and history'), ...errorResponses(...ERRORS) },
    }),
    async (c) => {
      ctx.requireLoaded();
      const { name, version } = c.req.param() as { name: string; version: string };
      const stage = lifecycle.stage(name, version);
      return c.json({ model: name, version, stage, history: await lifecycle.history(name, version) });
    },
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/models/{name}/stages',
      tags,
      summary: "Each loaded version's stage, the version serving requests that name none, and every change",
      ...secured('admin'),
      request: { params: S.ModelParams },
      responses: {
        200: json(
          z
            .object({
              model: z.string(),
              serving: z.string(),
              versions: z.array(z.object({ version: z.string(), stage: StageName.nullable() })),
              history: z.array(StageChange),
            })
            .openapi('ModelStages'),
          'Stages',
        ),
        ...errorResponses(...ERRORS),
      },
    }),
    async (c) => {
      ctx.requireLoaded();
      const name = c.req.param('name')!;
      const versions = lifecycle.stages(name);
      return c.json({
        model: name,
        serving: lifecycle.registry.resolve(name).version,
        versions,
        history: await lifecycle.history(name),
      });
    },
  );

  register(
    app,
    createRoute({
      method: 'post',
      path: '/models/{name}/versions/{version}/stage',
      tags,
      summary:
        'Move a version to staging, production or archived. The production version serves requests that name no version (unless a traffic policy says otherwise); promoting one archives the previous',
      ...secured('admin'),
      request: { params: S.ModelVersionParams, ...jsonBody(StageRequest) },
      responses: {
        200: json(StageResult, 'Changed, recorded, and applied to the next request'),
        ...errorResponses(...ERRORS, 400, 413, 415, 422),
      },
    }),
    async (c) => {
      ctx.requireLoaded();
      const { name, version } = c.req.param() as { name: string; version: string };
      const req = await ctx.readJson(c, StageRequest);
      return c.json(
        await lifecycle.setStage(name, version, req.stage, {
          by: who(c),
          reason: req.reason ?? null,
          archiveExisting: req.archive_existing,
        }),
      );
    },
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/models/{name}/traffic',
      tags,
      summary: "A model's traffic policy, and which versions requests naming none get now, with their shares",
      ...secured('admin'),
      request: { params: S.ModelParams },
      responses: { 200: json(TrafficInfo, 'The policy'), ...errorResponses(...ERRORS) },
    }),
    (c) => {
      ctx.requireLoaded();
      return c.json(lifecycle.traffic(c.req.param('name')!));
    },
  );

  register(
    app,
    createRoute({
      method: 'put',
      path: '/models/{name}/traffic',
      tags,
      summary:
        'Set how requests naming no version are shared: one version, or a weighted split (A/B, canary; sticky per X-Client-Id or API key), and optionally a shadow version that also runs them, compared and never returned. `{}` clears the policy',
      ...secured('admin'),
      request: { params: S.ModelParams, ...jsonBody(TrafficRequest) },
      responses: {
        200: json(TrafficInfo, 'Applied to the next request'),
        ...errorResponses(...ERRORS, 400, 413, 415, 422),
      },
    }),
    async (c) => {
      ctx.requireLoaded();
      const name = c.req.param('name')!;
      const req = await ctx.readJson(c, TrafficRequest);
      if (req.version !== undefined && req.split !== undefined) {
        throw new ServeError('ERR_VALIDATION', 'send version or split, not both', { field: 'split' });
      }
      let policy: TrafficPolicy | null = null;
      const split = req.version !== undefined ? { [req.version]: 1 } : req.split;
      if (split !== undefined) {
        if (!Object.values(split).some((w) => w > 0)) {
          throw new ServeError('ERR_VALIDATION', 'at least one version needs a weight above 0', {
            field: 'split',
          });
        }
        policy = { split, sticky: req.sticky ?? true };
      }
      if (req.shadow) {
        policy ??= { split: {}, sticky: req.sticky ?? true };
        policy.shadow = { version: req.shadow.version, sample: req.shadow.sample ?? 1 };
      }
      return c.json(await lifecycle.setTraffic(name, policy));
    },
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/models/{name}/shadow',
      tags,
      summary:
        "The shadow version's comparison with the serving versions since it was set: agreement rate, probability differences, each version's run time",
      ...secured('admin'),
      request: { params: S.ModelParams },
      responses: { 200: json(ShadowInfo, 'The comparison'), ...errorResponses(...ERRORS) },
    }),
    (c) => {
      ctx.requireLoaded();
      const name = c.req.param('name')!;
      const report = lifecycle.shadowReport(name);
      if (!report) {
        throw new ServeError(
          'ERR_NO_SHADOW',
          `model '${name}' has no shadow version (PUT /models/${name}/traffic)`,
          { field: 'name' },
        );
      }
      return c.json(report);
    },
  );

  // Seed 001's "load this model version": it becomes the default model's production version.
  register(
    app,
    createRoute({
      method: 'post',
      path: '/model/load/{version}',
      tags,
      summary:
        "Serve this version of the default model (or `?model=`): it is promoted to production (seed 001's route)",
      ...secured('admin'),
      request: {
        params: z.object({
          version: VersionText.openapi({ param: { name: 'version', in: 'path' }, example: '2' }),
        }),
        query: z.object({ model: z.string().min(1).optional() }),
      },
      responses: {
        200: json(StageResult.extend({ status: z.literal('success'), message: z.string() }), 'Serving'),
        ...errorResponses(...ERRORS, 422),
      },
    }),
    async (c) => {
      ctx.requireLoaded();
      const model = c.req.query('model');
      const name = ctx.deps.registry.resolve(model).name;
      const version = c.req.param('version')!;
      const result = await lifecycle.setStage(name, version, 'production', {
        by: who(c),
        reason: `POST /model/load/${version}`,
      });
      // "Load this version" means it serves: a split that would send requests elsewhere goes (a shadow of
      // another version stays).
      const { policy } = lifecycle.traffic(name);
      if (policy && Object.keys(policy.split).length > 0) {
        const shadow = policy.shadow && policy.shadow.version !== version ? policy.shadow : undefined;
        await lifecycle.setTraffic(name, shadow ? { split: {}, sticky: policy.sticky, shadow } : null);
        result.serving = lifecycle.registry.resolve(name).version;
      }
      return c.json({
        status: 'success' as const,
        message: `model ${name} version ${version} is serving`,
        ...result,
      });
    },
  );

  return app;
}
