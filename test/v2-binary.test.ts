/**
 * The binary tensor data extension and Triton's request habits, over real HTTP against the shipped models:
 * bodies with no Content-Type, binary inputs and outputs that agree with JSON ones, and every way a binary
 * body can fail to add up answered 4xx naming its field (a generated run of hostile bodies included).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, startTestServer } from './server.js';

let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  server = await startTestServer({ MAX_BODY_BYTES: '65536' });
});
afterAll(async () => {
  await server?.close();
});

const ROWS = [
  [24, 75.5, 1800, 12, 2, 1, 4.5],
  [48, 120, 5760, 24, 4, 2, 3.5],
  [1, 20, 20, 1, 1, 9, 1],
];
const INFER = '/v2/models/churn/versions/2/infer';

const f32 = (values: number[]) => new Uint8Array(new Float32Array(values).buffer);

/** A body as Triton's client builds one: the JSON header, then the binary parts. */
function body(header: unknown, ...parts: Uint8Array[]) {
  const head = new TextEncoder().encode(JSON.stringify(header));
  const all = new Uint8Array(head.byteLength + parts.reduce((n, p) => n + p.byteLength, 0));
  all.set(head);
  let at = head.byteLength;
  for (const p of parts) {
    all.set(p, at);
    at += p.byteLength;
  }
  return { bytes: all, headerLength: String(head.byteLength) };
}

const post = (bytes: Uint8Array | string, headers: Record<string, string> = {}) =>
  fetch(server.url + INFER, { method: 'POST', headers, body: bytes });

const binaryInput = (rows: number[][], size = rows.length * 28) => ({
  name: 'float_input',
  shape: [rows.length, 7],
  datatype: 'FP32',
  parameters: { binary_data_size: size },
});

/** The response's JSON header and binary section. */
async function split(res: Response) {
  const all = new Uint8Array(await res.arrayBuffer());
  const n = Number(res.headers.get('inference-header-content-length'));
  return { header: JSON.parse(new TextDecoder().decode(all.subarray(0, n))), binary: all.subarray(n) };
}

describe('v2 infer as Triton clients send it', () => {
  it('reads a body with no Content-Type as JSON, and answers what /predict answers for the same rows', async () => {
    // Bytes make fetch send no Content-Type at all, as Triton's client does.
    const req = { inputs: [{ name: 'float_input', shape: [3, 7], datatype: 'FP32', data: ROWS.flat() }] };
    const res = await post(new TextEncoder().encode(JSON.stringify(req)));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const v2 = await json(res);
    const predict = await json(
      await server.post('/predict', { features: ROWS, model: 'churn', version: '2', use_cache: false }),
    );
    const probs = v2.outputs.find((o: { name: string }) => o.name === 'probabilities').data;
    const labels = v2.outputs.find((o: { name: string }) => o.name === 'label').data;
    predict.predictions.forEach(
      (p: { prediction: number; probabilities: Record<string, number> }, r: number) => {
        expect(labels[r]).toBe(p.prediction);
        expect(probs[r * 2]).toBeCloseTo(p.probabilities.stays!, 6);
        expect(probs[r * 2 + 1]).toBeCloseTo(p.probabilities.churns!, 6);
      },
    );
  });

  it('takes binary inputs and returns binary outputs equal to the JSON answer, byte for byte', async () => {
    const asJson = await json(
      await server.post(INFER, {
        inputs: [{ name: 'float_input', shape: [3, 7], datatype: 'FP32', data: ROWS.flat() }],
        parameters: { use_cache: false },
      }),
    );
    const { bytes, headerLength } = body(
      { inputs: [binaryInput(ROWS)], parameters: { binary_data_output: true, use_cache: false } },
      f32(ROWS.flat()),
    );
    const res = await post(bytes, { 'Inference-Header-Content-Length': headerLength });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    const { header, binary } = await split(res);
    expect(header.outputs.map((o: { name: string }) => o.name)).toEqual(['label', 'probabilities']);
    const [label, probabilities] = header.outputs;
    expect(label).toEqual({
      name: 'label',
      datatype: 'INT64',
      shape: [3],
      parameters: { binary_data_size: 24 },
    });
    expect(probabilities.parameters.binary_data_size).toBe(24);
    expect(binary.byteLength).toBe(48);
    const labels = Array.from(new BigInt64Array(binary.slice(0, 24).buffer), Number);
    const probs = Array.from(new Float32Array(binary.slice(24).buffer));
    expect(labels).toEqual(asJson.outputs[0].data);
    expect(probs).toEqual(asJson.outputs[1].data);
  });

  it('returns each output as it asks: binary_data per output overrides binary_data_output', async () => {
    const { bytes, headerLength } = body(
      {
        inputs: [binaryInput(ROWS.slice(0, 1))],
        outputs: [
          { name: 'probabilities', parameters: { binary_data: false } },
          { name: 'label', parameters: { binary_data: true } },
        ],
        parameters: { binary_data_output: true },
      },
      f32(ROWS[0]!),
    );
    const res = await post(bytes, { 'Inference-Header-Content-Length': headerLength });
    expect(res.status).toBe(200);
    const { header, binary } = await split(res);
    expect(header.outputs[0].name).toBe('probabilities');
    expect(header.outputs[0].data).toHaveLength(2);
    expect(header.outputs[1]).toMatchObject({ name: 'label', parameters: { binary_data_size: 8 } });
    expect(binary.byteLength).toBe(8);
  });

  it('answers plain JSON (no Inference-Header-Content-Length) when no output is asked for as binary', async () => {
    const { bytes, headerLength } = body({ inputs: [binaryInput(ROWS.slice(0, 1))] }, f32(ROWS[0]!));
    const res = await post(bytes, {
      'Inference-Header-Content-Length': headerLength,
      'content-type': 'application/octet-stream',
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('inference-header-content-length')).toBeNull();
    expect((await json(res)).outputs[1].data).toHaveLength(2);
  });
});

/** A hostile case: what is sent, and the field the 400/422 must name. */
interface Case {
  what: string;
  send: () => Promise<Response>;
  status: number;
  field: string;
}

const withHeader = (header: unknown, parts: Uint8Array[], length?: string) => {
  const b = body(header, ...parts);
  return () => post(b.bytes, { 'Inference-Header-Content-Length': length ?? b.headerLength });
};

const one = ROWS[0]!;
const CASES: Case[] = [
  ...['-1', '1.5', 'abc', '1e3', '', ' ', '0x10', '99999999999999999999', '+5'].map((length) => ({
    what: `Inference-Header-Content-Length '${length}'`,
    send: withHeader({ inputs: [binaryInput([one])] }, [f32(one)], length),
    status: 400,
    field: 'Inference-Header-Content-Length',
  })),
  {
    what: 'a header length past the end of the body',
    send: withHeader({ inputs: [binaryInput([one])] }, [f32(one)], '100000'),
    status: 400,
    field: 'Inference-Header-Content-Length',
  },
  {
    what: 'a header length that cuts the JSON short',
    send: withHeader({ inputs: [binaryInput([one])] }, [f32(one)], '20'),
    status: 400,
    field: 'malformed JSON',
  },
  {
    what: 'binary bytes left over after every binary_data_size',
    send: withHeader({ inputs: [binaryInput([one])] }, [f32(one), new Uint8Array(4)]),
    status: 400,
    field: 'Inference-Header-Content-Length',
  },
  {
    what: 'a binary_data_size past the end of the binary section',
    send: withHeader({ inputs: [binaryInput([one], 56)] }, [f32(one)]),
    status: 400,
    field: 'inputs[0].parameters.binary_data_size',
  },
  {
    what: 'a binary_data_size that does not match shape × datatype',
    send: withHeader({ inputs: [binaryInput([one], 24)] }, [f32(one).subarray(0, 24)]),
    status: 400,
    field: 'inputs[0].parameters.binary_data_size',
  },
  {
    what: 'FP32 bytes sent as FP64',
    send: withHeader({ inputs: [{ ...binaryInput([one]), datatype: 'FP64' }] }, [f32(one)]),
    status: 422,
    field: 'inputs[0].datatype',
  },
  ...[-1, 1.5, '28', null, 2 ** 60].map((size) => ({
    what: `binary_data_size ${JSON.stringify(size)}`,
    send: withHeader({ inputs: [{ ...binaryInput([one]), parameters: { binary_data_size: size } }] }, [
      f32(one),
    ]),
    status: 400,
    field: 'inputs[0].parameters.binary_data_size',
  })),
  {
    what: 'binary_data_size on an input that also has JSON data',
    send: withHeader({ inputs: [{ ...binaryInput([one]), data: one }] }, [f32(one)]),
    status: 400,
    field: 'inputs[0].parameters.binary_data_size',
  },
  {
    what: 'binary_data_size with no Inference-Header-Content-Length',
    send: () =>
      post(JSON.stringify({ inputs: [binaryInput([one])] }), { 'content-type': 'application/json' }),
    status: 400,
    field: 'inputs[0].parameters.binary_data_size',
  },
  {
    what: 'an input with neither data nor binary_data_size',
    send: withHeader({ inputs: [{ name: 'float_input', shape: [1, 7], datatype: 'FP32' }] }, []),
    status: 422,
    field: 'inputs[0].data',
  },
  {
    what: 'a NaN in binary FP32 data',
    send: withHeader({ inputs: [binaryInput([one])] }, [f32([1, 2, Number.NaN, 4, 5, 6, 7])]),
    status: 422,
    field: 'inputs[0]: binary value 2',
  },
  {
    what: 'a BYTES tensor whose element runs past its end',
    send: withHeader(
      {
        inputs: [{ name: 'float_input', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: 6 } }],
      },
      [new Uint8Array([5, 0, 0, 0, 65, 66])],
    ),
    status: 400,
    field: 'inputs[0].parameters.binary_data_size',
  },
  {
    what: 'a BYTES tensor with fewer elements than its shape',
    send: withHeader(
      {
        inputs: [{ name: 'float_input', shape: [2], datatype: 'BYTES', parameters: { binary_data_size: 6 } }],
      },
      [new Uint8Array([2, 0, 0, 0, 65, 66])],
    ),
    status: 400,
    field: 'inputs[0].parameters.binary_data_size',
  },
  {
    what: 'a well-formed BYTES tensor for a model that takes FP32',
    send: withHeader(
      {
        inputs: [{ name: 'float_input', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: 6 } }],
      },
      [new Uint8Array([2, 0, 0, 0, 65, 66])],
    ),
    status: 422,
    field: 'inputs[0].datatype',
  },
  {
    what: 'binary_data_output that is not a boolean',
    send: withHeader({ inputs: [binaryInput([one])], parameters: { binary_data_output: 'yes' } }, [f32(one)]),
    status: 422,
    field: 'parameters.binary_data_output',
  },
  {
    what: 'an output asked for as binary_data 1',
    send: withHeader(
      { inputs: [binaryInput([one])], outputs: [{ name: 'label', parameters: { binary_data: 1 } }] },
      [f32(one)],
    ),
    status: 422,
    field: 'outputs[0].parameters.binary_data',
  },
  {
    what: 'the classification extension (class_count)',
    send: withHeader(
      { inputs: [binaryInput([one])], outputs: [{ name: 'label', parameters: { class_count: 2 } }] },
      [f32(one)],
    ),
    status: 422,
    field: 'outputs[0].parameters.class_count',
  },
  {
    what: 'an input in shared memory',
    send: withHeader(
      {
        inputs: [
          { name: 'float_input', shape: [1, 7], datatype: 'FP32', parameters: { shared_memory_region: 'r' } },
        ],
      },
      [],
    ),
    status: 422,
    field: 'inputs[0].parameters.shared_memory_region',
  },
  {
    what: 'a Content-Type that is neither JSON nor octet-stream',
    send: () => post(JSON.stringify({ inputs: [] }), { 'content-type': 'text/plain' }),
    status: 415,
    field: 'content-type',
  },
];

describe('malformed binary bodies are 4xx naming the field', () => {
  for (const c of CASES) {
    it(c.what, async () => {
      const res = await c.send();
      const text = await res.text();
      expect(res.status, text).toBe(c.status);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      const error = JSON.parse(text).error;
      expect(typeof error).toBe('string');
      expect(error).toContain(c.field);
    });
  }

  it('never answers 5xx to generated binary bodies (header lengths, sizes and bytes at random)', async () => {
    const header = fc.record({
      inputs: fc.array(
        fc.record(
          {
            name: fc.constantFrom('float_input', 'x'),
            shape: fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 3 }),
            datatype: fc.constantFrom('FP32', 'FP64', 'INT64', 'BOOL', 'BYTES', 'UINT8'),
            parameters: fc.record(
              { binary_data_size: fc.oneof(fc.integer({ min: -4, max: 80 }), fc.constant(28)) },
              { requiredKeys: [] },
            ),
            data: fc.array(fc.double(), { maxLength: 8 }),
          },
          { requiredKeys: ['name', 'shape', 'datatype'] },
        ),
        { minLength: 1, maxLength: 3 },
      ),
      parameters: fc.record({ binary_data_output: fc.boolean() }, { requiredKeys: [] }),
    });
    // A valid request now and then (one row's 28 bytes), so answers are reached too.
    const valid = fc.constant({ inputs: [binaryInput([one])], parameters: { binary_data_output: true } });
    const row = fc
      .float32Array({ minLength: 7, maxLength: 7, noDefaultInfinity: true, noNaN: true })
      .map((a) => new Uint8Array(a.buffer));
    const cases = fc.sample(
      fc.tuple(
        fc.oneof(valid, header),
        fc.oneof(fc.uint8Array({ maxLength: 120 }), row),
        fc.oneof(fc.constant(undefined), fc.integer({ min: -5, max: 400 }).map(String)),
      ),
      { numRuns: 300, seed: 20261124 },
    );
    const statuses: Record<number, number> = {};
    for (const [h, tail, length] of cases) {
      const b = body(h, tail);
      const res = await post(b.bytes, { 'Inference-Header-Content-Length': length ?? b.headerLength });
      const text = await res.text();
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      expect(res.status, `${JSON.stringify(h)} + ${tail.byteLength} bytes → ${text}`).toBeLessThan(500);
      if (res.status === 200 && res.headers.get('content-type') === 'application/octet-stream') {
        const n = Number(res.headers.get('inference-header-content-length'));
        expect(JSON.parse(text.slice(0, n)).outputs).toHaveLength(2);
      } else expect(typeof JSON.parse(text)).toBe('object');
    }
    // The generator reaches the answers and the refusals.
    expect(statuses[200]).toBeGreaterThan(0);
    expect(statuses[400]).toBeGreaterThan(0);
    expect(statuses[422]).toBeGreaterThan(0);
  });
});
