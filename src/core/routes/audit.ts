/**
 * Reading the audit log back: one record by id, or a search by request id, model, version and time, so a
 * user can answer "what did we tell this customer, with which model?". Records appear once written (within
 * AUDIT_FLUSH_MS while the store is up). Records hold every input: these routes need the admin scope.
 */
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AuditReader } from '../audit.js';
import { decodeTensorPack, type PackedTensor, packedJson, uuidText } from '../audit-codec.js';
import { ServeError } from '../errors.js';
import { validationError } from '../http.js';
import { ACCESS_ERRORS, errorResponses, json, register, secured } from '../openapi.js';
import { toRowPredictions } from '../prediction.js';
import type { ModelEntry } from '../registry.js';
import * as S from '../schemas.js';
import { type Tensor, toV2Datatype } from '../tensor.js';
import type { RouteContext } from './context.js';

const tags = ['audit'];

const unavailable = (cause?: unknown) =>
  new ServeError('ERR_AUDIT_UNAVAILABLE', 'the audit store cannot be read now; retry shortly', {
    retryAfterSeconds: 1,
    cause,
  });

/** A float32 in its shortest decimal form (120.37, not 120.37000274658203). */
function shortest(v: number): number {
  if (!Number.isFinite(v) || Math.fround(v) !== v) return v;
  for (let p = 1; p < 17; p++) {
    const x = Number(v.toPrecision(p));
    if (Math.fround(x) === v) return x;
  }
  return v;
}

const values = (t: PackedTensor): number[] => {
  const out = Array.from(t.data as ArrayLike<number | bigint>, Number);
  return t.type === 'float32' ? out.map(shortest) : out;
};

/** Tensors as the Open Inference Protocol writes them. */
const asV2 = (tensors: PackedTensor[]) =>
  tensors.map((t) => ({ name: t.name, datatype: toV2Datatype(t.type), shape: t.dims, data: values(t) }));

/**
 * A record's tensor packs as JSON. For /predict and /predict/batch of a tabular model still loaded, the
 * form the client used: rows of named features, and the predictions as they were answered; otherwise (a
 * v2 request, or a version no longer loaded) the tensors as the Open Inference Protocol writes them.
 */
function render(
  row: Record<string, unknown>,
  entryOf: (name: string, version: string) => ModelEntry | undefined,
  probability: 'positive' | 'list',
) {
  const input = decodeTensorPack(row.input as Uint8Array);
  const output = decodeTensorPack(row.output as Uint8Array);
  // A record written before the binary form: its JSON, as it was.
  const legacyIn = packedJson(input);
  const legacyOut = packedJson(output);
  if (legacyIn || legacyOut) return { input: legacyIn?.value, output: legacyOut?.value };
  const route = String(row.route);
  const entry = route.startsWith('/predict')
    ? entryOf(String(row.model), String(row.model_version))
    : undefined;
  const spec = entry?.tabular;
  const features = spec && input.length === 1 && input[0]!.name === spec.input ? input[0]! : undefined;
  if (!entry || !spec || !features) return { input: asV2(input), output: asV2(output) };
  const rows = Number(row.rows);
  const names = spec.featureNames;
  const data = values(features);
  const per = data.length / rows;
  const named = Array.from({ length: rows }, (_, r) =>
    names && names.length === per
      ? Object.fromEntries(names.map((n, k) => [n, data[r * per + k]]))
      : data.slice(r * per, (r + 1) * per),
  );
  const outputs: Record<string, Tensor> = {};
  for (const t of output) outputs[t.name] = { type: t.type, dims: t.dims, data: t.data };
  const predictions = toRowPredictions(entry, outputs, rows, probability);
  const single = route === '/predict' && rows === 1;
  return { input: single ? named[0] : named, output: single ? predictions[0] : predictions };
}

/** A row as the API answers it: the id as text, the time as ISO 8601, tensors as JSON. */
function normalize(
  row: Record<string, unknown>,
  entryOf: (name: string, version: string) => ModelEntry | undefined,
  probability: 'positive' | 'list',
): Record<string, unknown> {
  const { record_id, time_ms, bytes_before: _before, matches: _matches, input, output, ...rest } = row;
  const id = record_id instanceof Uint8Array ? uuidText(record_id) : String(record_id);
  const out: Record<string, unknown> = { id, ...rest, time: new Date(Number(time_ms)).toISOString() };
  if (input !== undefined && output !== undefined) {
    Object.assign(out, render({ ...row, input, output }, entryOf, probability));
  }
  return out;
}

export function auditRoutes(ctx: RouteContext) {
  const app = new OpenAPIHono();
  const probability = ctx.config.probability ?? 'positive';
  const entryOf = (name: string, version: string) => {
    try {
      return ctx.deps.registry.resolve(name, version);
    } catch {
      return undefined;
    }
  };
  const asAnswered = (row: Record<string, unknown>) => normalize(row, entryOf, probability);
  const reader = (): AuditReader => {
    const r = ctx.deps.auditReader;
    if (!r) throw unavailable();
    return r;
  };
  const read = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw err instanceof ServeError ? err : unavailable(err);
    }
  };

  register(
    app,
    createRoute({
      method: 'get',
      path: '/audit/{id}',
      tags,
      summary: 'One audit record, whole: input, output, model version and sha256',
      ...secured('admin'),
      request: { params: S.AuditIdParams },
      responses: {
        200: json(S.AuditEntry, 'The record'),
        ...errorResponses(...ACCESS_ERRORS, 404, 422, 503),
      },
    }),
    async (c: Context) => {
      const params = S.AuditIdParams.safeParse({ id: c.req.param('id') });
      if (!params.success) throw validationError(params.error);
      const row = await read(() => reader().get(params.data.id));
      if (!row) {
        throw new ServeError('ERR_NOT_FOUND', `no audit record ${params.data.id} (yet)`, { field: 'id' });
      }
      return c.json(asAnswered(row));
    },
  );

  register(
    app,
    createRoute({
      method: 'get',
      path: '/audit',
      tags,
      summary: 'Search the audit log, newest first: by request id, model, version, time',
      ...secured('admin'),
      request: { query: S.AuditSearchQuery },
      responses: {
        200: json(S.AuditSearchResult, 'Matching records'),
        ...errorResponses(...ACCESS_ERRORS, 422, 503),
      },
    }),
    async (c: Context) => {
      const query = S.AuditSearchQuery.safeParse(c.req.query());
      if (!query.success) throw validationError(query.error);
      const { include_io, ...q } = query.data;
      const withIo = include_io === 'true';
      const rows = await read(() => reader().search({ ...q, include_io: withIo }));
      // Fewer than asked while more match: the page stopped at its byte bound; narrow the search to see more.
      const matches = Number(rows[0]?.matches ?? 0);
      const truncated = withIo && rows.length < Math.min(q.limit, matches);
      return c.json({ count: rows.length, truncated, records: rows.map(asAnswered) });
    },
  );
  return app;
}
