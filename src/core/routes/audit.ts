/**
 * Reading the audit log back: one record by id, or a search by request id, model, version and time, so a
 * user can answer "what did we tell this customer, with which model?". Records appear once written (within
 * AUDIT_FLUSH_MS while the store is up). Records hold every input: these routes need the admin scope.
 */
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AuditReader } from '../audit.js';
import { ServeError } from '../errors.js';
import { validationError } from '../http.js';
import { ACCESS_ERRORS, errorResponses, json, register, secured } from '../openapi.js';
import * as S from '../schemas.js';
import type { RouteContext } from './context.js';

const tags = ['audit'];

const unavailable = (cause?: unknown) =>
  new ServeError('ERR_AUDIT_UNAVAILABLE', 'the audit store cannot be read now; retry shortly', {
    retryAfterSeconds: 1,
    cause,
  });

/** Times as ISO strings whatever the store hands back (Postgres gives Date objects). */
function normalize(row: Record<string, unknown>): Record<string, unknown> {
  const { time, bytes_before: _before, matches: _matches, ...rest } = row;
  return { ...rest, time: time instanceof Date ? time.toISOString() : String(time) };
}

export function auditRoutes(ctx: RouteContext) {
  const app = new OpenAPIHono();
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
      return c.json(normalize(row));
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
      return c.json({ count: rows.length, truncated, records: rows.map(normalize) });
    },
  );
  return app;
}
