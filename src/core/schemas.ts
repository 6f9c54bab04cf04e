/**
 * Every request and response shape: requests are validated against these at the boundary, and the OpenAPI
 * document is generated from the same objects (test/conformance.test.ts holds the server to it).
 *
 * Feature values are validated by `rowsToTensor` (it names the exact field and knows the model's types), so
 * the zod schema checks only the structure; the document shows the element types clients must send.
 */
import { z } from '@hono/zod-openapi';

const SEED_FEATURES_EXAMPLE = {
  tenure_months: 24,
  monthly_charges: 75.5,
  total_charges: 1800,
  contract_length: 12,
  num_products: 2,
  support_tickets: 1,
  satisfaction_score: 4.5,
};

const numberRow = { type: 'array', items: { type: 'number' }, minItems: 1 } as const;
const namedRow = { type: 'object', additionalProperties: { type: 'number' }, minProperties: 1 } as const;
const rowKinds = [
  { title: 'named features', ...namedRow },
  { title: 'one row in model order', ...numberRow },
] as const;

/** Structure only (an object or an array): `rowsToTensor` checks each value and names the field. */
const objectOrArray = z
  .unknown()
  .refine((v) => v !== null && typeof v === 'object', 'expected {name: number} or an array of numbers');

/** One row: {name: number} or number[]. */
const Row = objectOrArray.openapi({ oneOf: rowKinds } as never);

const Features = objectOrArray.openapi({
  description:
    'One row as {name: number} (models with feature names) or number[] in the model’s input order; or ' +
    'number[][] for several rows. With no `model` named, the row chooses the model: the one whose feature ' +
    'names (or count) it matches.',
  oneOf: [...rowKinds, { title: 'several rows', type: 'array', items: numberRow, minItems: 1 }],
  example: SEED_FEATURES_EXAMPLE,
} as never);

const common = {
  model: z.string().min(1).optional().openapi({
    description: 'Model name. If absent: the model the features match (see `features`), else the default.',
  }),
  version: z
    .union([z.string().min(1), z.number().int().nonnegative()])
    .transform(String)
    .optional()
    .openapi({ description: 'Model version; the newest if absent.' }),
  use_cache: z.boolean().optional().openapi({ description: 'false skips both cache tiers.' }),
  request_id: z.string().min(1).max(200).optional().openapi({ description: 'Echoed back; audited.' }),
  timeout_ms: z.number().positive().optional().openapi({
    description:
      'Answer within this many ms or not at all (504 ERR_DEADLINE_EXCEEDED); the server’s limit applies when larger. Also the X-Timeout-Ms header.',
  }),
};

export const PredictRequest = z
  .object({ features: Features, ...common })
  .openapi('PredictRequest', { example: { features: SEED_FEATURES_EXAMPLE, use_cache: true } });

export const BatchRequest = z
  .object({
    requests: z.array(z.object({ features: Row })).optional(),
    instances: z.array(Row).optional().openapi({ description: 'Rows as number[] or {name: number}.' }),
    ...common,
  })
  .openapi('BatchRequest', {
    description: 'Exactly one of `requests` and `instances`.',
    example: { requests: [{ features: SEED_FEATURES_EXAMPLE }] },
  });

export const RowPrediction = z
  .object({
    prediction: z.number().openapi({ description: 'Class index (classifiers) or value (regressors).' }),
    label: z.string().optional().openapi({ description: 'The class name, where the model has labels.' }),
    probability: z
      .union([z.number(), z.array(z.number())])
      .optional()
      .openapi({
        description:
          'Binary models: the positive class’s probability; multiclass: the predicted class’s. A list of ' +
          'every class’s probability under PREDICT_PROBABILITY=list.',
      }),
    probabilities: z.record(z.string(), z.number()).optional().openapi({
      description: 'Every class’s probability, keyed by label (or class index).',
    }),
  })
  .openapi('RowPrediction');

const responseMeta = {
  request_id: z.string(),
  model: z.string(),
  model_version: z.string(),
  latency_ms: z.number(),
  cached: z.boolean().openapi({ description: 'True when every row came from the cache.' }),
  timestamp: z.string(),
};

export const PredictResponse = z
  .object({
    ...responseMeta,
    prediction: z.number().optional(),
    label: RowPrediction.shape.label,
    probability: RowPrediction.shape.probability,
    probabilities: RowPrediction.shape.probabilities,
    cache_tier: z.enum(['l1', 'l2']).nullable().optional(),
    predictions: z
      .array(RowPrediction)
      .optional()
      .openapi({ description: 'Present (instead of the single fields) when features held several rows.' }),
    cached_rows: z.number().int().optional(),
  })
  .openapi('PredictResponse');

export const BatchResponse = z
  .object({
    ...responseMeta,
    count: z.number().int(),
    cached_rows: z.number().int(),
    predictions: z.array(RowPrediction),
  })
  .openapi('BatchResponse');

export const ErrorResponse = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'ERR_FEATURE_MISSING' }),
      message: z.string(),
      field: z.string().optional().openapi({ example: 'features.tenure_months' }),
      candidates: z.array(z.string()).optional().openapi({ description: 'Models that would fit.' }),
    }),
  })
  .openapi('Error');

const V2Parameters = z.record(z.string(), z.unknown());

export const V2InferRequest = z
  .object({
    id: z.string().optional(),
    parameters: V2Parameters.optional(),
    inputs: z
      .array(
        z.object({
          name: z.string(),
          shape: z.array(z.number().int().nonnegative()),
          datatype: z.string().openapi({ example: 'FP32' }),
          data: z
            .array(z.unknown())
            .optional()
            .openapi({
              description:
                'Row-major values, flat or nested; absent when `parameters.binary_data_size` says the ' +
                'values follow the JSON as binary tensor data.',
              type: 'array',
              items: {},
            } as never),
          parameters: V2Parameters.optional(),
        }),
      )
      .min(1),
    outputs: z.array(z.object({ name: z.string(), parameters: V2Parameters.optional() })).optional(),
  })
  .openapi('V2InferRequest', {
    example: {
      inputs: [
        { name: 'float_input', shape: [1, 7], datatype: 'FP32', data: [24, 75.5, 1800, 12, 2, 1, 4.5] },
      ],
    },
  });

const V2Tensor = z.object({
  name: z.string(),
  datatype: z.string(),
  shape: z.array(z.number()),
  data: z
    .array(z.union([z.number(), z.boolean()]))
    .optional()
    .openapi({ description: 'Absent for an output returned as binary tensor data.' }),
  parameters: z
    .object({ binary_data_size: z.number().int() })
    .optional()
    .openapi({ description: 'For an output returned as binary tensor data: its size in bytes.' }),
});

export const V2InferResponse = z
  .object({
    model_name: z.string(),
    model_version: z.string(),
    id: z.string().optional(),
    parameters: z.object({ cached_rows: z.number().int() }).optional(),
    outputs: z.array(V2Tensor),
  })
  .openapi('V2InferResponse');

export const V2Error = z.object({ error: z.string() }).openapi('V2Error');

const V2TensorMeta = z.object({ name: z.string(), datatype: z.string(), shape: z.array(z.number().int()) });

export const V2ModelMetadata = z
  .object({
    name: z.string(),
    versions: z.array(z.string()),
    platform: z.string(),
    inputs: z.array(V2TensorMeta),
    outputs: z.array(V2TensorMeta),
  })
  .openapi('V2ModelMetadata');

export const V2ServerMetadata = z
  .object({ name: z.string(), version: z.string(), extensions: z.array(z.string()) })
  .openapi('V2ServerMetadata');

export const V2Live = z.object({ live: z.boolean() }).openapi('V2Live');
export const V2Ready = z.object({ ready: z.boolean() }).openapi('V2Ready');
export const V2ModelReady = z.object({ name: z.string(), ready: z.boolean() }).openapi('V2ModelReady');

const V2ConfigTensor = z.object({
  name: z.string(),
  data_type: z.string().openapi({ example: 'TYPE_FP32' }),
  format: z.literal('FORMAT_NONE'),
  dims: z
    .array(z.number().int())
    .openapi({ description: 'Without the batch dimension when max_batch_size > 0; -1 = any size.' }),
  reshape: z.object({ shape: z.array(z.number().int()) }).optional(),
});

export const V2ModelConfig = z
  .object({
    name: z.string(),
    platform: z.literal('onnxruntime_onnx'),
    backend: z.literal('onnxruntime'),
    version_policy: z.object({ all: z.object({}) }),
    max_batch_size: z.number().int(),
    input: z.array(V2ConfigTensor),
    output: z.array(V2ConfigTensor),
    dynamic_batching: z
      .object({
        max_queue_delay_microseconds: z.number().int(),
        preferred_batch_size: z.array(z.number().int()),
        preserve_ordering: z.boolean(),
        default_queue_policy: z.object({
          timeout_action: z.literal('REJECT'),
          default_timeout_microseconds: z.number().int(),
          allow_timeout_override: z.boolean(),
          max_queue_size: z.number().int(),
        }),
      })
      .optional(),
    instance_group: z.array(
      z.object({ name: z.string(), kind: z.enum(['KIND_CPU', 'KIND_MODEL']), count: z.number().int() }),
    ),
    default_model_filename: z.string(),
  })
  .openapi('V2ModelConfig');

export const V2RepositoryIndexRequest = z
  .object({ ready: z.boolean().optional() })
  .openapi('V2RepositoryIndexRequest');

export const V2RepositoryRequest = z
  .object({ parameters: z.record(z.string(), z.unknown()).optional() })
  .openapi('V2RepositoryRequest');

export const V2RepositoryAction = z
  .object({ name: z.string(), state: z.enum(['READY', 'UNAVAILABLE']), versions: z.array(z.string()) })
  .openapi('V2RepositoryAction');

export const V2RepositoryIndex = z
  .array(
    z.object({
      name: z.string(),
      version: z.string(),
      state: z.enum(['READY', 'UNAVAILABLE', 'LOADING']),
      reason: z.string(),
    }),
  )
  .openapi('V2RepositoryIndex');

const StatDuration = z.object({ count: z.number().int(), ns: z.number().int() });
const ComputeStats = {
  compute_input: StatDuration,
  compute_infer: StatDuration,
  compute_output: StatDuration,
};

export const V2ModelStats = z
  .object({
    model_stats: z.array(
      z.object({
        name: z.string(),
        version: z.string(),
        last_inference: z.number().int().openapi({ description: 'Epoch ms of the last request; 0 = none.' }),
        inference_count: z
          .number()
          .int()
          .openapi({ description: 'Rows the model computed (cache hits excluded).' }),
        execution_count: z.number().int().openapi({ description: 'Model runs.' }),
        inference_stats: z.object({
          success: StatDuration,
          fail: StatDuration,
          queue: StatDuration,
          ...ComputeStats,
        }),
        batch_stats: z.array(z.object({ batch_size: z.number().int(), ...ComputeStats })),
      }),
    ),
  })
  .openapi('V2ModelStats');

const TensorInfo = z.object({
  name: z.string(),
  type: z.string().nullable().optional(),
  shape: z.array(z.union([z.number(), z.string(), z.null()])),
});

const modelVersionFields = {
  version: z.string(),
  sha256: z.string(),
  inputs: z.array(TensorInfo),
  outputs: z.array(TensorInfo),
  feature_names: z.array(z.string()).nullable(),
  feature_count: z.number().int().nullable(),
  class_labels: z.array(z.string()).nullable(),
  batchable: z.boolean(),
  load_seconds: z.number(),
  stage: z.enum(['staging', 'production', 'archived']).nullable().openapi({
    description: 'Its stage (POST /models/{name}/versions/{version}/stage); null: none',
  }),
  description: z.string().nullable(),
  training: z.unknown().openapi({ description: 'From model.json, as written there.' }),
  metrics: z.unknown().openapi({ description: 'From model.json, as written there.' }),
  created: z.string().nullable(),
};

export const ModelVersion = z.object(modelVersionFields).openapi('ModelVersion');

export const ModelDetail = z
  .object({ name: z.string(), default_version: z.string(), versions: z.array(ModelVersion) })
  .openapi('ModelDetail');

export const ModelInfo = z
  .object({
    name: z.string(),
    ...modelVersionFields,
    drift_metrics: z
      .object({
        mean: z.number(),
        std: z.number(),
        count: z.number(),
        psi: z.number().nullable(),
        drift_detected: z.boolean(),
        status: z.string(),
      })
      .nullable()
      .openapi({
        description:
          'Seed 000’s shape: the prediction scores over the drift window (mean, std, count), with their PSI against the reference; null without a drift reference',
      }),
  })
  .openapi('ModelInfo');

export const ModelList = z
  .object({
    default_model: z.string().nullable(),
    models: z.array(
      z.object({
        name: z.string(),
        versions: z.array(z.string()),
        default_version: z.string(),
        description: z.string().nullable(),
      }),
    ),
  })
  .openapi('ModelList');

export const Health = z
  .object({
    status: z.enum(['healthy', 'unavailable']),
    ready: z.boolean(),
    model_version: z.string().nullable(),
    models: z.record(z.string(), z.array(z.string())),
    queued_rows: z.number().int(),
    redis_connected: z.boolean().optional(),
    database_connected: z.boolean().optional(),
    timestamp: z.string(),
  })
  .catchall(z.unknown())
  .openapi('Health', { description: 'Seed shape, plus the cache’s and audit log’s state.' });

export const Live = z.object({ status: z.literal('live') }).openapi('Live');
export const Ready = z.object({ status: z.literal('ready') }).openapi('Ready');

export const ServerInfo = z
  .object({
    name: z.string(),
    version: z.string(),
    default_model: z.string().nullable(),
    endpoints: z.array(z.string()),
  })
  .openapi('ServerInfo');

export const ModelParams = z.object({
  name: z
    .string()
    .min(1)
    .openapi({ param: { name: 'name', in: 'path' }, example: 'churn' }),
});
export const ModelVersionParams = ModelParams.extend({
  version: z
    .string()
    .min(1)
    .openapi({ param: { name: 'version', in: 'path' }, example: '1' }),
});
/** Postgres timestamps start at 4713 BC, but year 0000 in ISO is refused by its parser: 1 AD onwards. */
const fromYearOne = (s: string) => !s.startsWith('0000');
/** Postgres text cannot hold NUL: such a value can match no record (stored ones hold U+FFFD instead). */
const noNul = (s: string) => !s.includes('\0');

export const ModelQuery = z.object({
  model: z
    .string()
    .min(1)
    .refine(noNul, 'must not contain NUL')
    .optional()
    .openapi({ param: { name: 'model', in: 'query' }, example: 'churn' }),
  version: z
    .string()
    .min(1)
    .refine(noNul, 'must not contain NUL')
    .optional()
    .openapi({ param: { name: 'version', in: 'query' } }),
});

/** The seed clients' documented requests, as OpenAPI examples (../shared/seeds/ READMEs). */
export const PREDICT_EXAMPLES = {
  seed000: {
    summary: 'Seed 000: churn, named features',
    value: { features: SEED_FEATURES_EXAMPLE, use_cache: true },
  },
  seed001: {
    summary: 'Seed 001: iris-shaped rows (chooses iris)',
    value: {
      features: [
        [5.1, 3.5, 1.4, 0.2],
        [6.2, 2.9, 4.3, 1.3],
      ],
    },
  },
  seed002: {
    summary: 'Seed 002: feature_0 … feature_9 (chooses classifier-10)',
    value: {
      features: {
        feature_0: 1.5,
        feature_1: 2.3,
        feature_2: -0.8,
        feature_3: 0.1,
        feature_4: -1.2,
        feature_5: 0.7,
        feature_6: 1.8,
        feature_7: -0.3,
        feature_8: 2.1,
        feature_9: 0.9,
      },
    },
  },
  seed003: {
    summary: 'Seed 003: 20 numbers (chooses fraud)',
    value: {
      features: [
        1.5, -0.3, 2.1, 0.8, -1.2, 0.5, 1.8, -0.7, 2.3, 0.2, -1.5, 1.1, 0.9, -0.4, 2.0, 0.7, -1.8, 1.3, 0.6,
        -0.9,
      ],
    },
  },
  seed004: {
    summary: 'Seed 004: fraud with a request id',
    value: {
      features: [
        0.5, 0.3, 0.8, 0.2, 0.9, 0.1, 0.7, 0.4, 0.6, 0.5, 0.3, 0.8, 0.2, 0.9, 0.1, 0.7, 0.4, 0.6, 0.5, 0.3,
      ],
      request_id: 'test_001',
    },
  },
};

export const BATCH_EXAMPLES = {
  seed002: {
    summary: 'Seed 002: {"requests": [{"features": …}]}',
    value: { requests: [{ features: PREDICT_EXAMPLES.seed002.value.features }] },
  },
  instances: {
    summary: 'Rows in model order (chooses iris)',
    value: { instances: [[5.1, 3.5, 1.4, 0.2]] },
  },
};

export const AuditIdParams = z.object({
  id: z
    .uuid()
    .openapi({ param: { name: 'id', in: 'path' }, example: '0b9a3c1e-2f4d-4c5b-9a7e-1d2c3b4a5f60' }),
});

export const AuditSearchQuery = z.object({
  request_id: z
    .string()
    .min(1)
    .max(200)
    .refine(noNul, 'must not contain NUL')
    .optional()
    .openapi({ param: { name: 'request_id', in: 'query' }, example: 'customer-42-2026-11-24' }),
  ...ModelQuery.shape,
  since: z.iso
    .datetime({ offset: true })
    .refine(fromYearOne, 'must be in year 0001 or later')
    .optional()
    .openapi({ param: { name: 'since', in: 'query' }, example: '2026-11-24T00:00:00Z' }),
  until: z.iso
    .datetime({ offset: true })
    .refine(fromYearOne, 'must be in year 0001 or later')
    .optional()
    .openapi({ param: { name: 'until', in: 'query' } }),
  // The bounds before .int(): a huge limit is told the real bound (1000), not JavaScript's largest safe integer.
  limit: z.coerce
    .number()
    .min(1)
    .max(1000)
    .int()
    .default(100)
    .openapi({ param: { name: 'limit', in: 'query' }, example: 100 }),
  include_io: z
    .enum(['true', 'false'])
    .default('false')
    .openapi({ param: { name: 'include_io', in: 'query' }, description: 'Include inputs and outputs' }),
});

export const AuditEntry = z
  .object({
    id: z.string(),
    request_id: z.string(),
    time: z.string(),
    route: z.string(),
    model: z.string(),
    model_version: z.string(),
    model_sha256: z.string(),
    rows: z.number(),
    latency_ms: z.number(),
    cache: z.string().nullable(),
    status: z.number(),
    client_id: z.string().nullable(),
    api_key: z.string().nullable().describe('The name of the API key the request presented (never the key)'),
    input: z.unknown().optional(),
    output: z.unknown().optional(),
  })
  .openapi('AuditEntry');

export const AuditSearchResult = z
  .object({
    count: z.number(),
    truncated: z.boolean().openapi({
      description:
        'With include_io: the page stopped at 2 MiB of stored inputs and outputs (about 16 MB of JSON); narrow the search',
    }),
    records: z.array(AuditEntry),
  })
  .openapi('AuditSearchResult');
