/**
 * The server against its own OpenAPI document: requests generated from the document (schema-valid ones,
 * the document's examples, near-misses and garbage), sent to a real server over HTTP; every answer must
 * carry a status the operation declares, a body that matches the schema declared for that status, and no
 * 5xx. Set CONFORMANCE_RUNS and CONFORMANCE_SEED to explore further than CI does.
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer } from './server.js';
import { freshDatabase } from './services.js';

const RUNS = Number(process.env.CONFORMANCE_RUNS ?? 300);
const ADMIN_RUNS = Math.min(RUNS, 24);
// biome-ignore lint/suspicious/noExplicitAny: an OpenAPI operation object
const isAdmin = (op: any) => (op.tags as string[] | undefined)?.includes('admin') === true;
const SEED = Number(process.env.CONFORMANCE_SEED ?? 20261124);

// biome-ignore lint/suspicious/noExplicitAny: JSON Schema and OpenAPI objects are walked generically
type Json = any;

let server: Awaited<ReturnType<typeof startTestServer>>;
let db: Awaited<ReturnType<typeof freshDatabase>>;
let doc: Json;
let modelNames: string[];
beforeAll(async () => {
  // A small body limit, so generated bodies reach the 413 path too; the batcher's queue bound is left at
  // its default, and the conformance run never fills it.
  // The audit log is on, in a Postgres database of its own, so the audit routes answer (and are probed).
  db = await freshDatabase('conformance');
  // Admin routes open (ADMIN_OPEN, development mode), so they are probed too, not only refused 403.
  server = await startTestServer({
    MAX_BODY_BYTES: '65536',
    MAX_ROWS_PER_REQUEST: '64',
    AUDIT: 'on',
    DATABASE_URL: db.url,
    ADMIN_OPEN: 'true',
  });
  doc = await (await fetch(`${server.url}/openapi.json`)).json();
  const models: Json = await (await fetch(`${server.url}/models`)).json();
  modelNames = models.models.map((m: { name: string }) => m.name);
});
afterAll(async () => {
  await server?.close();
  await db?.drop();
});

const resolve = (schema: Json): Json => {
  if (schema?.$ref) {
    const name = (schema.$ref as string).replace('#/components/schemas/', '');
    return resolve(doc.components.schemas[name]);
  }
  return schema;
};

/** A fast-check arbitrary for values a JSON Schema (2020-12, as OpenAPI 3.1 writes it) accepts. */
function fromSchema(input: Json, depth = 0): fc.Arbitrary<unknown> {
  const schema = resolve(input) ?? {};
  if (depth > 6) return fc.constant(null);
  const alternatives = schema.oneOf ?? schema.anyOf;
  if (alternatives) return fc.oneof(...alternatives.map((s: Json) => fromSchema(s, depth + 1)));
  if (schema.enum) return fc.constantFrom(...schema.enum);
  if (schema.const !== undefined) return fc.constant(schema.const);
  const types: string[] = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
  if (types.length > 1) return fc.oneof(...types.map((t) => fromSchema({ ...schema, type: t }, depth)));
  const withExample = (arb: fc.Arbitrary<unknown>) =>
    schema.example !== undefined ? fc.oneof(arb, fc.constant(schema.example)) : arb;
  switch (types[0]) {
    case 'null':
      return fc.constant(null);
    case 'boolean':
      return fc.boolean();
    case 'integer':
      return withExample(
        fc.oneof(
          fc.integer({ min: schema.minimum ?? -5, max: schema.maximum ?? 20 }),
          fc.integer({ min: schema.minimum ?? -2147483648, max: schema.maximum ?? 2147483647 }),
        ),
      );
    case 'number':
      return withExample(
        fc.oneof(
          fc.integer({ min: -10, max: 10 }),
          fc.double({ noNaN: true, noDefaultInfinity: true, min: schema.minimum, max: schema.maximum }),
        ),
      );
    case 'string':
      return withExample(
        fc.oneof(
          fc.string({ minLength: schema.minLength ?? 0, maxLength: Math.min(schema.maxLength ?? 12, 40) }),
          fc.constantFrom(...modelNames, '1', '2'),
        ),
      );
    case 'array': {
      const items = fromSchema(schema.items ?? {}, depth + 1);
      return withExample(
        fc.array(items, { minLength: schema.minItems ?? 0, maxLength: Math.max(schema.minItems ?? 0, 8) }),
      );
    }
    case 'object': {
      const props: Record<string, Json> = schema.properties ?? {};
      const required = new Set<string>(schema.required ?? []);
      const shape: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [k, s] of Object.entries(props)) shape[k] = fromSchema(s, depth + 1);
      const known = fc.record(shape, { requiredKeys: [...required] });
      const extra =
        schema.additionalProperties && typeof schema.additionalProperties === 'object'
          ? fc.dictionary(fc.string({ maxLength: 16 }), fromSchema(schema.additionalProperties, depth + 1), {
              minKeys: schema.minProperties ?? 0,
              maxKeys: 12,
            })
          : fc.constant({});
      return withExample(fc.tuple(extra, known).map(([e, k]) => ({ ...e, ...k })));
    }
    default:
      return fc.jsonValue({ maxDepth: 3 });
  }
}

/** Every path to a value inside `value`: ['inputs', 0, 'shape', 1], … */
function paths(value: unknown, at: (string | number)[] = [], out: (string | number)[][] = []) {
  out.push(at);
  if (value !== null && typeof value === 'object' && at.length < 8) {
    for (const [k, v] of Object.entries(value)) paths(v, [...at, Array.isArray(value) ? Number(k) : k], out);
  }
  return out;
}

const HOSTILE: unknown[] = [
  0,
  -1,
  1,
  2 ** 31,
  1e308,
  -0,
  0.5,
  '',
  'x',
  null,
  true,
  [],
  {},
  [[[[[]]]]],
  '\u0000',
];

/** Near-misses of a valid value: one to three fields anywhere inside it dropped or replaced. */
function mutate(value: unknown): fc.Arbitrary<unknown> {
  const all = paths(value).filter((p) => p.length > 0);
  if (all.length === 0) return fc.jsonValue({ maxDepth: 2 });
  const edit = fc.tuple(
    fc.constantFrom(...all),
    fc.oneof(fc.constant(undefined), fc.constantFrom(...HOSTILE), fc.jsonValue({ maxDepth: 2 })),
  );
  return fc.array(edit, { minLength: 1, maxLength: 3 }).map((edits) => {
    const copy = structuredClone(value) as Json;
    for (const [path, v] of edits) {
      let parent = copy;
      for (const k of path.slice(0, -1)) parent = parent?.[k];
      if (parent === null || typeof parent !== 'object') continue;
      const last = path.at(-1)!;
      if (v === undefined) {
        if (Array.isArray(parent)) parent.splice(Number(last), 1);
        else delete parent[last];
      } else parent[last] = structuredClone(v);
    }
    return copy;
  });
}

interface Request {
  path: string;
  query: string;
  contentType: string | undefined;
  body: string | undefined;
}

function requests(method: string, path: string, op: Json): fc.Arbitrary<Request> {
  const params = (op.parameters ?? []) as Json[];
  const pathParams = params.filter((p) => p.in === 'path');
  const queryParams = params.filter((p) => p.in === 'query');
  const paramValue = (p: Json) =>
    fc.oneof(
      {
        weight: 3,
        arbitrary: fc.constantFrom(...modelNames, '1', '2', ...(p.schema?.example ? [p.schema.example] : [])),
      },
      // '.' and '..' are not path segments a URL can carry: clients resolve them away.
      {
        weight: 1,
        arbitrary: fc.string({ minLength: 1, maxLength: 20 }).filter((v) => v !== '.' && v !== '..'),
      },
    );
  const pathArb = fc
    .tuple(...pathParams.map((p) => paramValue(p).map((v) => [p.name as string, String(v)] as const)))
    .map((pairs) => pairs.reduce((acc, [k, v]) => acc.replace(`{${k}}`, encodeURIComponent(v)), path));
  const queryArb = fc
    .tuple(
      ...queryParams.map((p) =>
        fc.option(paramValue(p).map((v) => `${p.name}=${encodeURIComponent(String(v))}`)),
      ),
    )
    .map((parts) => {
      const q = parts.filter(Boolean).join('&');
      return q ? `?${q}` : '';
    });
  const bodySchema = op.requestBody?.content?.['application/json']?.schema;
  let bodyArb: fc.Arbitrary<Pick<Request, 'contentType' | 'body'>> = fc.constant({
    contentType: undefined,
    body: undefined,
  });
  if (method === 'post' && bodySchema) {
    const valid = fromSchema(bodySchema);
    const examples: unknown[] = [
      ...(resolve(bodySchema).example !== undefined ? [resolve(bodySchema).example] : []),
      ...Object.values<{ value: unknown }>(op.requestBody.content['application/json'].examples ?? {}).map(
        (e) => e.value,
      ),
    ];
    const example = examples.length > 0 ? examples : undefined;
    const json = (v: unknown) => ({ contentType: 'application/json', body: JSON.stringify(v) ?? 'null' });
    bodyArb = fc.oneof(
      { weight: 6, arbitrary: valid.map(json) },
      ...(example ? [{ weight: 2, arbitrary: fc.constantFrom(...example).map(json) }] : []),
      {
        weight: 2,
        arbitrary: (example ? fc.constantFrom(...example).chain(mutate) : valid.chain(mutate)).map(json),
      },
      { weight: 2, arbitrary: valid.chain(mutate).map(json) },
      { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 4 }).map(json) },
      {
        weight: 1,
        arbitrary: fc.record({
          contentType: fc.constantFrom(
            undefined,
            'text/plain',
            'application/x-www-form-urlencoded',
            'application/json',
          ),
          body: fc.oneof(
            fc.string(),
            valid.map((v) => JSON.stringify(v)?.slice(0, -1) ?? ''),
          ),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.integer({ min: 70_000, max: 200_000 }).map((n) => ({
          contentType: 'application/json',
          body: JSON.stringify({ features: Array(Math.ceil(n / 4)).fill(1) }),
        })),
      },
    );
  }
  return fc.tuple(pathArb, queryArb, bodyArb).map(([p, query, b]) => ({ path: p, query, ...b }));
}

describe('the server holds to its OpenAPI document', () => {
  it('declares every route the app serves, and serves every route it declares', async () => {
    const declared = Object.entries(doc.paths as Json).flatMap(([path, ops]) =>
      Object.keys(ops as object).map((m) => `${m.toUpperCase()} ${path}`),
    );
    expect(declared.length).toBeGreaterThanOrEqual(24);
    // Every declared operation exists: none answers the router's own 404 / 405.
    for (const op of declared) {
      const [method, path] = op.split(' ') as [string, string];
      const url =
        server.url +
        path.replace(/\{(\w+)\}/g, (_, k) =>
          k === 'file' ? 'swagger-ui.css' : k === 'version' ? '1' : 'churn',
        );
      const res = await fetch(url, {
        method,
        headers: { 'content-type': 'application/json' },
        body: method === 'POST' ? '{}' : undefined,
      });
      const body: Json = res.headers.get('content-type')?.includes('json') ? await res.json() : undefined;
      const code = body?.error?.code ?? body?.error;
      expect([code, res.status], op).not.toEqual(['ERR_NOT_FOUND', 404]);
      expect(res.status, op).not.toBe(405);
    }
    // The sweep unloaded churn (POST …/unload): load it back for the tests below.
    expect((await fetch(`${server.url}/v2/repository/models/churn/load`, { method: 'POST' })).status).toBe(
      200,
    );
  });

  it('answers every request example in the document with 200', async () => {
    let n = 0;
    for (const [path, ops] of Object.entries(doc.paths as Json)) {
      for (const [method, op] of Object.entries(ops as Record<string, Json>)) {
        const content = op.requestBody?.content?.['application/json'];
        if (!content) continue;
        const examples = Object.entries<{ value: unknown }>(content.examples ?? {});
        for (const [name, { value }] of examples) {
          const url = server.url + path.replace('{name}', 'churn').replace('{version}', '2');
          const res = await fetch(url, {
            method: method.toUpperCase(),
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify(value),
          });
          expect(res.status, `${method} ${path} example ${name}: ${await res.text()}`).toBe(200);
          n++;
        }
      }
    }
    expect(n).toBeGreaterThanOrEqual(7);
  });

  it(`answers ${RUNS} generated requests per operation only with declared statuses and bodies`, async () => {
    const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
    ajv.addSchema({ $id: 'doc', components: doc.components });
    const compiled = new Map<string, ReturnType<typeof ajv.compile>>();
    const validator = (schema: Json) => {
      const key = JSON.stringify(schema);
      let v = compiled.get(key);
      if (!v) {
        v = ajv.compile(JSON.parse(key.replaceAll('"#/components/', '"doc#/components/')));
        compiled.set(key, v);
      }
      return v;
    };

    const failures: string[] = [];
    const counts: Record<string, number> = {};
    const statuses: Record<string, Record<number, number>> = {};
    // Admin operations change which models serve (an unload makes the others' answers 503): they go last,
    // and fewer of them, as each real load starts new workers.
    const operations = Object.entries(doc.paths as Json)
      .flatMap(([path, ops]) =>
        Object.entries(ops as Record<string, Json>).map(([method, op]) => ({ path, method, op })),
      )
      .sort((a, b) => Number(isAdmin(a.op)) - Number(isAdmin(b.op)));
    const runsOf = (op: Json) => (isAdmin(op) ? ADMIN_RUNS : RUNS);
    for (const { path, method, op } of operations) {
      {
        const name = `${method.toUpperCase()} ${path}`;
        const samples = fc.sample(requests(method, path, op), { numRuns: runsOf(op), seed: SEED });
        counts[name] = 0;
        // Eight at a time: requests of one operation share batches, as clients' requests do.
        for (let i = 0; i < samples.length; i += 8) {
          await Promise.all(
            samples.slice(i, i + 8).map(async (req) => {
              const headers: Record<string, string> = {};
              if (req.contentType) headers['content-type'] = req.contentType;
              const res = await fetch(server.url + req.path + req.query, {
                method: method.toUpperCase(),
                headers,
                body: req.body,
              });
              const text = await res.text();
              counts[name]!++;
              statuses[name] ??= {};
              statuses[name][res.status] = (statuses[name][res.status] ?? 0) + 1;
              const what = `${name} ${req.path}${req.query} ${req.contentType ?? '-'} ${(req.body ?? '').slice(0, 300)} → ${res.status} ${text.slice(0, 300)}`;
              const declared = op.responses[String(res.status)];
              // A 504 is the answer a client that asked for (almost) no time at all asked for.
              const askedMs = (() => {
                try {
                  const b = JSON.parse(req.body ?? 'null');
                  return b?.timeout_ms ?? b?.parameters?.timeout_ms;
                } catch {
                  return undefined;
                }
              })();
              const askedForIt = res.status === 504 && typeof askedMs === 'number' && askedMs < 50;
              if (res.status >= 500 && !askedForIt) failures.push(`5xx: ${what}`);
              if (!declared) return void failures.push(`undeclared status: ${what}`);
              const type = (res.headers.get('content-type') ?? '').split(';')[0]!;
              const content = declared.content?.[type];
              if (declared.content && !content)
                return void failures.push(`undeclared content type ${type}: ${what}`);
              if (type === 'application/json' && content?.schema) {
                const validate = validator(content.schema);
                if (!validate(JSON.parse(text)))
                  failures.push(`body does not match: ${ajv.errorsText(validate.errors)}: ${what}`);
              }
            }),
          );
        }
      }
    }
    console.log(JSON.stringify(statuses, null, 1).replace(/\n\s*/g, ' '));
    for (const { path, method, op } of operations)
      expect(counts[`${method.toUpperCase()} ${path}`]).toBe(runsOf(op));
    // The generator reaches both sides of the prediction routes: answers and each kind of refusal.
    for (const op of ['POST /predict', 'POST /predict/batch', 'POST /v2/models/{name}/infer']) {
      for (const status of [200, 400, 413, 415, 422])
        expect(statuses[op]?.[status], `${op} ${status}`).toBeGreaterThan(0);
    }
    expect(failures.slice(0, 10)).toEqual([]);
  }, 600_000);
});
