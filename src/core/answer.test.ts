/** Large answers written in slices read exactly as JSON.stringify would have written them. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { jsonInSlices, jsonWithRaw } from './answer.js';

describe('answers written in slices', () => {
  it('jsonInSlices writes what JSON.stringify writes, giving way before every slice', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.jsonValue(), { maxLength: 3500, size: 'max' }), async (items) => {
        let turns = 0;
        const text = await jsonInSlices(items, async () => {
          turns++;
        });
        expect(text).toBe(JSON.stringify(items));
        expect(turns).toBe(items.length <= 1000 ? 0 : Math.ceil(items.length / 1000));
      }),
      { numRuns: 30 },
    );
  });

  it('jsonWithRaw writes the body as JSON.stringify does, the raw text in its field', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string(), fc.oneof(fc.jsonValue(), fc.constant(undefined))),
        fc.jsonValue(),
        (body, list) => {
          const withList = { ...body, predictions: list };
          expect(jsonWithRaw(withList, 'predictions', JSON.stringify(list))).toBe(JSON.stringify(withList));
        },
      ),
      { numRuns: 300 },
    );
  });
});
