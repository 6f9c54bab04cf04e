import { mkdtempSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../core/audit.js';
import { AuditChunkWriter, decodeRecord, decodeTensorPack } from '../../core/audit-codec.js';
import { SegmentLog } from './segment-log.js';

const record = (i: number, features = 7): AuditRecord => ({
  request_id: `req-${i}`,
  time: Date.UTC(2026, 11, 3) + i,
  route: '/predict',
  model: 'churn',
  model_version: '2',
  model_sha256: 'ab'.repeat(32),
  input: {
    float_input: {
      type: 'float32',
      dims: [1, features],
      data: Float32Array.from({ length: features }, (_, k) => i + k / 10),
    },
  },
  output: {
    label: { type: 'int64', dims: [1], data: BigInt64Array.of(BigInt(i % 2)) },
    probabilities: { type: 'float32', dims: [1, 2], data: Float32Array.of(0.25, 0.75) },
  },
  rows: 1,
  latency_ms: 1.5,
  cache: i % 3 === 0 ? 'l1' : null,
  status: 200,
  client_id: i % 2 ? `client-${i}` : null,
  api_key: null,
});

function chunkOf(from: number, to: number, features = 7): Uint8Array {
  const w = new AuditChunkWriter(256);
  for (let i = from; i < to; i++) w.write(record(i, features));
  const { buffer, bytes } = w.take();
  return new Uint8Array(buffer, 0, bytes);
}

const opts = { segmentBytes: 4096, maxBytes: 1024 * 1024 };
const requestIds = (payloads: Uint8Array[]) => payloads.map((p) => decodeRecord(p).request_id);

describe('segment log', () => {
  it('appends chunks, gives every record an id and a checksum, and reads them back in order across segments', () => {
    const dir = mkdtempSync(join(tmpdir(), 'seg-'));
    const log = new SegmentLog(dir, opts);
    for (let c = 0; c < 10; c++) expect(log.append(chunkOf(c * 10, c * 10 + 10))).toBe(10);
    expect(readdirSync(dir).length).toBeGreaterThan(1); // rotated at 4 KB
    const all: Uint8Array[] = [];
    let pos = log.start;
    for (;;) {
      const batch = log.read(pos, 7, 1 << 20);
      if (batch.payloads.length === 0) break;
      all.push(...batch.payloads);
      pos = batch.next;
    }
    expect(requestIds(all)).toEqual(Array.from({ length: 100 }, (_, i) => `req-${i}`));
    const ids = all.map((p) => decodeRecord(p).id);
    expect(new Set(ids).size).toBe(100);
    // UUIDv7: version 7, variant 10, the record's time in the first 48 bits.
    for (const [i, id] of ids.entries()) {
      expect(id[14]).toBe('7');
      expect('89ab').toContain(id[19]);
      expect(Number.parseInt(id.replaceAll('-', '').slice(0, 12), 16)).toBe(Date.UTC(2026, 11, 3) + i);
    }
    const r = decodeRecord(all[42]!);
    expect(r).toMatchObject({ request_id: 'req-42', client_id: null, cache: 'l1', rows: 1, status: 200 });
    const [features] = decodeTensorPack(r.input);
    expect(features!.dims).toEqual([1, 7]);
    expect([...(features!.data as Float32Array)]).toEqual(
      Array.from({ length: 7 }, (_, k) => Math.fround(42 + k / 10)),
    );
    expect(decodeTensorPack(r.output).map((t) => t.name)).toEqual(['label', 'probabilities']);
    log.close();
  });

  it('keeps its records across a restart, and appends after them (never over them)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'seg-'));
    const first = new SegmentLog(dir, { ...opts, segmentBytes: 1 << 20 });
    first.append(chunkOf(0, 5));
    first.close();
    const again = new SegmentLog(dir, { ...opts, segmentBytes: 1 << 20 });
    expect(again.countFrom(again.start)).toBe(5);
    again.append(chunkOf(5, 8));
    expect(requestIds(again.read(again.start, 100, 1 << 20).payloads)).toEqual(
      Array.from({ length: 8 }, (_, i) => `req-${i}`),
    );
    again.close();
  });

  it('cuts a torn tail at open (a write cut short by a crash): counted, never replayed, appends go on after', () => {
    const dir = mkdtempSync(join(tmpdir(), 'seg-'));
    const log = new SegmentLog(dir, { ...opts, segmentBytes: 1 << 20 });
    log.append(chunkOf(0, 5));
    log.close();
    const [file] = readdirSync(dir);
    const path = join(dir, file!);
    const whole = statSync(path).size;
    truncateSync(path, whole - 9); // the last frame loses its last 9 bytes
    const reopened = new SegmentLog(dir, { ...opts, segmentBytes: 1 << 20 });
    expect(reopened.dropped.torn).toBe(1);
    expect(reopened.countFrom(reopened.start)).toBe(4);
    reopened.append(chunkOf(5, 6));
    expect(requestIds(reopened.read(reopened.start, 100, 1 << 20).payloads)).toEqual([
      'req-0',
      'req-1',
      'req-2',
      'req-3',
      'req-5',
    ]);
    reopened.close();
  });

  it('a tail with a complete length but a wrong checksum is torn too', () => {
    const dir = mkdtempSync(join(tmpdir(), 'seg-'));
    const log = new SegmentLog(dir, { ...opts, segmentBytes: 1 << 20 });
    log.append(chunkOf(0, 3));
    log.close();
    const path = join(dir, readdirSync(dir)[0]!);
    const bytes = readFileSync(path);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff; // one flipped byte in the last record's payload
    writeFileSync(path, bytes);
    const reopened = new SegmentLog(dir, { ...opts, segmentBytes: 1 << 20 });
    expect(reopened.dropped.torn).toBe(1);
    expect(requestIds(reopened.read(reopened.start, 100, 1 << 20).payloads)).toEqual(['req-0', 'req-1']);
    reopened.close();
  });

  it('a damaged record in a closed segment ends that segment for reading; the next segments are read', () => {
    const dir = mkdtempSync(join(tmpdir(), 'seg-'));
    const log = new SegmentLog(dir, { ...opts, segmentBytes: 2000 });
    for (let c = 0; c < 6; c++) log.append(chunkOf(c * 5, c * 5 + 5));
    const files = readdirSync(dir).sort();
    expect(files.length).toBeGreaterThan(2);
    // Flip a byte in the middle of the first segment's third record.
    const first = join(dir, files[0]!);
    const bytes = readFileSync(first);
    const frames: number[] = [];
    for (let o = 0; o < bytes.length; o += 8 + bytes.readUInt32LE(o)) frames.push(o);
    bytes[frames[2]! + 20] = bytes[frames[2]! + 20]! ^ 0xff;
    writeFileSync(first, bytes);
    const ids: string[] = [];
    let pos = log.start;
    for (let i = 0; i < 50; i++) {
      const batch = log.read(pos, 100, 1 << 20);
      ids.push(...requestIds(batch.payloads));
      if (
        batch.payloads.length === 0 &&
        batch.next.segment === pos.segment &&
        batch.next.offset === pos.offset
      )
        break;
      pos = batch.next;
    }
    expect(ids.slice(0, 2)).toEqual(['req-0', 'req-1']);
    expect(ids).toContain('req-29');
    expect(ids).not.toContain('req-2');
    expect(log.dropped.torn).toBe(1);
    log.close();
  });

  it('reads in batches bounded by records and bytes, and a record larger than the byte bound alone', () => {
    const dir = mkdtempSync(join(tmpdir(), 'seg-'));
    const log = new SegmentLog(dir, { ...opts, segmentBytes: 1 << 22 });
    log.append(chunkOf(0, 3));
    log.append(chunkOf(3, 4, 100_000)); // one record of 400 KB
    log.append(chunkOf(4, 6));
    const sizes: number[] = [];
    let pos = log.start;
    for (;;) {
      const batch = log.read(pos, 100, 64 * 1024);
      if (batch.payloads.length === 0) break;
      sizes.push(batch.payloads.length);
      expect(batch.bytes <= 64 * 1024 || batch.payloads.length === 1).toBe(true);
      pos = batch.next;
    }
    expect(sizes).toEqual([3, 1, 2]);
    log.close();
  });

  it('deletes segments once every record in them is in the store', () => {
    const dir = mkdtempSync(join(tmpdir(), 'seg-'));
    const log = new SegmentLog(dir, opts);
    for (let c = 0; c < 10; c++) log.append(chunkOf(c * 10, c * 10 + 10));
    const before = readdirSync(dir).length;
    const batch = log.read(log.start, 60, 1 << 20);
    log.release(batch.next);
    const after = readdirSync(dir).length;
    expect(after).toBeLessThan(before);
    expect(log.countFrom(batch.next)).toBe(40);
    // Reading on from the position the store holds still finds the rest.
    expect(requestIds(log.read(batch.next, 100, 1 << 20).payloads)[0]).toBe('req-60');
    log.close();
  });

  it('drops what would pass its byte bound, counted, and keeps the rest', () => {
    const dir = mkdtempSync(join(tmpdir(), 'seg-'));
    const log = new SegmentLog(dir, { segmentBytes: 1 << 20, maxBytes: 3000 });
    let appended = 0;
    for (let c = 0; c < 10; c++) appended += log.append(chunkOf(c * 5, c * 5 + 5));
    expect(appended).toBeGreaterThan(0);
    expect(appended + log.dropped.log_full).toBe(50);
    expect(log.bytes).toBeLessThanOrEqual(3000);
    log.close();
  });
});
