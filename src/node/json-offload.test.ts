/**
 * The JSON parsing thread gives what JSON.parse gives, whatever the document: generated documents (with
 * the large number arrays and matrices it packs, and everything it must leave alone), malformed ones (the
 * same message) and hostile ones (nested 100,000 deep, `__proto__` keys).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJsonParser, type JsonParser } from './json-offload.js';
import { PACK_MAX_LEFT, PACK_MIN_NUMBERS, packJson, unpackJson } from './json-pack.js';

const bytesOf = (text: string) => new TextEncoder().encode(text);

/** JSON numbers as JSON carries them: finite doubles, -0 included. */
const number = fc.oneof(
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer({ min: -1e6, max: 1e6 }),
  fc.constant(-0),
);
// size 'max': fast-check's default keeps arrays short, below what is packed (PACK_MIN_NUMBERS).
const row = (min: number, max: number) => fc.array(number, { minLength: min, maxLength: max, size: 'max' });
/** What requests carry: rows of numbers (most above the packing threshold), a stray value among them. */
const requestLike = fc.record({
  model: fc.string(),
  instances: fc.oneof(
    fc.array(row(0, 80), { minLength: 1, maxLength: 40, size: 'max' }),
    fc.array(fc.oneof(row(0, 80), fc.string(), fc.constant(null), fc.array(row(1, 3))), { maxLength: 20 }),
  ),
  inputs: fc.array(
    fc.record({ name: fc.string(), shape: fc.array(fc.nat(), { maxLength: 3 }), data: row(0, 600) }),
    { maxLength: 3 },
  ),
});

describe('packJson and unpackJson', () => {
  it('give back the document, as any thread would receive it', () => {
    fc.assert(
      fc.property(fc.oneof(requestLike, fc.jsonValue()), (doc) => {
        const text = JSON.stringify(doc);
        const packed = packJson(JSON.parse(text));
        const back =
          packed === undefined || packed === 'inline'
            ? JSON.parse(text)
            : unpackJson(structuredClone(packed));
        expect(back).toStrictEqual(JSON.parse(text));
      }),
      { numRuns: 300, endOnFailure: true },
    );
  });

  it('pack a request’s rows and leave small arrays and mixed rows in place', () => {
    const rows = Array.from({ length: 10 }, (_, r) => Array.from({ length: 64 }, (_, k) => r * 64 + k));
    const packed = packJson({ model: 'm', instances: rows, small: [1, 2, 3] });
    if (packed === undefined || packed === 'inline') throw new Error('expected the rows packed');
    expect(packed.paths).toEqual([['instances']]);
    expect(packed.rows).toEqual([10]);
    expect(packed.numbers).toHaveLength(640);
    expect(packed.value).toEqual({ model: 'm', instances: null, small: [1, 2, 3] });
    // A string among the rows: not a matrix; the rows that are long enough are packed one by one.
    const long = Array.from({ length: 300 }, (_, k) => k);
    const mixed = packJson({ instances: [long, rows[0], long, ['x']] });
    if (mixed === undefined || mixed === 'inline') throw new Error('expected rows packed');
    expect(mixed.rows).toEqual([-1, -1]);
    expect((mixed.value as { instances: unknown[] }).instances).toEqual([null, rows[0], null, ['x']]);
    expect(packJson({ instances: rows.slice(0, 3) })).toBeUndefined(); // 192 numbers: not worth it
    expect(PACK_MIN_NUMBERS).toBeGreaterThan(192);
  });

  it('leave documents that would cost the receiver more than parsing to be parsed there', () => {
    expect(packJson(JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`))).toBe('inline');
    const named = Array.from({ length: PACK_MAX_LEFT }, () => ({ features: { a: 1, b: 2 } }));
    expect(packJson({ requests: named })).toBe('inline');
  });

  it('leaves a document with a __proto__ key to be parsed where it is used', () => {
    const text = `{"__proto__": {"x": [${Array(300).fill(1).join(',')}]}, "y": [${Array(300).fill(2).join(',')}]}`;
    expect(packJson(JSON.parse(text))).toBe('inline');
  });
});

describe('the parsing thread', () => {
  let parser: JsonParser;
  beforeAll(() => {
    parser = createJsonParser({ threads: 1 });
  });
  afterAll(() => parser.close());

  it('answers as JSON.parse for generated bodies, with the same message for malformed ones', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(requestLike, fc.jsonValue()), fc.nat(), async (doc, cut) => {
        const text = JSON.stringify(doc) ?? 'null';
        expect(await parser.parse(bytesOf(text))).toStrictEqual(JSON.parse(text));
        // Cut short: malformed unless the cut leaves a whole document.
        const partial = text.slice(0, cut % (text.length + 1));
        let expected: unknown;
        try {
          expected = { value: JSON.parse(partial) };
        } catch (err) {
          expected = { error: (err as Error).message };
        }
        const got = await parser.parse(bytesOf(partial)).then(
          (value) => ({ value }),
          (err: Error) => {
            expect(err).toBeInstanceOf(SyntaxError);
            return { error: err.message };
          },
        );
        expect(got).toStrictEqual(expected);
      }),
      { numRuns: 200, endOnFailure: true },
    );
  });

  it('takes a whole buffer (moved, not copied) and copies a view of part of one', async () => {
    const whole = bytesOf(JSON.stringify({ x: Array.from({ length: 1000 }, (_, i) => i / 7) }));
    const value = (await parser.parse(whole)) as { x: number[] };
    expect(value.x[999]).toBe(999 / 7);
    expect(whole.byteLength).toBe(0); // detached: moved to the parsing thread
    const big = bytesOf('[1,2,3]    ');
    const part = big.subarray(0, 7);
    expect(await parser.parse(part)).toEqual([1, 2, 3]);
    expect(big.byteLength).toBe(11);
  });

  it('parses a body nested deep under __proto__, and the next one after it (the thread is not stuck)', async () => {
    for (const depth of [5_000, 20_000]) {
      const text = `{"pad":"${'x'.repeat(70_000)}","__proto__":${'['.repeat(depth)}${']'.repeat(depth)}}`;
      const value = (await parser.parse(bytesOf(text))) as Record<string, unknown>;
      expect(Object.hasOwn(value, '__proto__')).toBe(true);
      expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
      expect(await parser.parse(bytesOf('{"a":[1,2,3]}'))).toEqual({ a: [1, 2, 3] });
    }
  });

  it('gives back bodies nested too deep to send, and they parse here', async () => {
    const text = `{"a":${'['.repeat(50_000)}${']'.repeat(50_000)}}`;
    const value = (await parser.parse(bytesOf(text))) as { a: unknown[] };
    expect(Array.isArray(value.a)).toBe(true);
  });
});
