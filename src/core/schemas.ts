/** Request and response shapes: validated at the boundary and published as OpenAPI. */
import { z } from '@hono/zod-openapi';

const featuresDoc = {
  description:
    'One row as {name: number} (models with feature names) or number[] in the model’s input order; or number[][] for several rows.',
  example: {
    tenure_months: 24,
    monthly_charges: 75.5,
    total_charges: 1800,
    contract_length: 12,
    num_products: 2,
    support_tickets: 1,
    satisfaction_score: 4.5,
  },
};

const common = {
  model: z.string().min(1).optional().openapi({ description: 'Model name; the default model if absent.' }),
  version: z
    .union([z.string().min(1), z.number().int().nonnegative()])
    .transform(String)
    .optional()
    .openapi({ description: 'Model version; the newest if absent.' }),
  use_cache: z.boolean().optional(),
  request_id: z.string().min(1).max(200).optional(),
};

export const PredictRequest = z
  .object({ features: z.unknown().openapi(featuresDoc), ...common })
  .openapi('PredictRequest');

export const BatchRequest = z
  .object({
    requests: z.array(z.object({ features: z.unknown().openapi(featuresDoc) })).optional(),
    instances: z
      .array(z.unknown())
      .optional()
      .openapi({ description: 'Rows as number[] or {name: number}.' }),
    ...common,
  })
  .openapi('BatchRequest');

export const RowPrediction = z.object({
  prediction: z.number(),
  label: z.string().optional(),
  probability: z.number().optional(),
  probabilities: z.record(z.string(), z.number()).optional(),
});

const responseMeta = {
  request_id: z.string(),
  model: z.string(),
  model_version: z.string(),
  latency_ms: z.number(),
  cached: z.boolean().openapi({ description: 'True when every row came from the cache.' }),
  timestamp: z.string(),
};

export const PredictResponse = RowPrediction.extend({
  ...responseMeta,
  predictions: z
    .array(RowPrediction)
    .optional()
    .openapi({ description: 'Present when features held several rows.' }),
})
  .partial({ prediction: true })
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
  .object({ error: z.object({ code: z.string(), message: z.string(), field: z.string().optional() }) })
  .openapi('Error');

export const V2InferRequest = z
  .object({
    id: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
    inputs: z
      .array(
        z.object({
          name: z.string(),
          shape: z.array(z.number().int().nonnegative()),
          datatype: z.string(),
          data: z.array(z.unknown()),
          parameters: z.record(z.string(), z.unknown()).optional(),
        }),
      )
      .min(1),
    outputs: z
      .array(z.object({ name: z.string(), parameters: z.record(z.string(), z.unknown()).optional() }))
      .optional(),
  })
  .openapi('V2InferRequest');

export const V2InferResponse = z
  .object({
    model_name: z.string(),
    model_version: z.string(),
    id: z.string().optional(),
    outputs: z.array(
      z.object({
        name: z.string(),
        datatype: z.string(),
        shape: z.array(z.number()),
        data: z.array(z.union([z.number(), z.boolean()])),
      }),
    ),
  })
  .openapi('V2InferResponse');

export const V2Error = z.object({ error: z.string() }).openapi('V2Error');
