/**
 * The audit log's write-ahead segments: every answered prediction's record is appended here (by the log
 * writer thread, within a few ms of the answer) before any store sees it, and the store writer reads it back
 * from here. A store that is down, slow or refusing therefore never loses a record and never holds one in
 * memory; a hard kill loses only what had not reached the file yet.
 *
 * Files `NNNNNNNNNNNN.seg` in one directory, each a run of frames (audit-codec.ts): u32 length, u32 CRC-32
 * of the payload, payload. A frame whose length runs past the file or whose CRC does not match is a torn
 * tail (a write cut short by a crash): at open it is cut off and counted, never replayed. Segments every
 * record of which is in the store are deleted. Everything here is synchronous: it runs on the writer thread.
 */
import { randomFillSync } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { FRAME_HEADER, ID_OFFSET, writeUuidV7 } from '../../core/audit-codec.js';

export interface Position {
  segment: number;
  offset: number;
}

export interface SegmentLogOptions {
  /** A segment is closed and a new one begun past this size. */
  segmentBytes: number;
  /** Most bytes all segments may hold; records past it are dropped (counted), never held in memory. */
  maxBytes: number;
}

/** Bytes read from a segment at a time. */
const READ_BLOCK = 256 * 1024;
/** The largest frame read back: anything longer is a corrupt length, not a record. */
const MAX_FRAME = 1024 * 1024 * 1024;
const NAME = /^(\d{12})\.seg$/;
const fileName = (n: number) => `${String(n).padStart(12, '0')}.seg`;

export interface ReadBatch {
  /** Each record's payload (views into one buffer read from the file). */
  payloads: Uint8Array[];
  /** The position just after each record. */
  ends: Position[];
  /** Where the next read starts. */
  next: Position;
  /** Bytes of payloads. */
  bytes: number;
}

export type DropReason = 'disk_full' | 'log_full' | 'torn';

export class SegmentLog {
  readonly dir: string;
  readonly #opts: SegmentLogOptions;
  /** Segment number → size, oldest first. */
  readonly #sizes = new Map<number, number>();
  #active = 0;
  #fd = -1;
  #unsynced = false;
  readonly #random = Buffer.alloc(4096);
  #randomAt = this.#random.length;
  /** The last id's millisecond and counter: ids are strictly increasing (see writeUuidV7). */
  #lastMs = 0;
  #counter = 0;
  /** Records dropped, by reason: what the store will never see. */
  readonly dropped: Record<DropReason, number> = { disk_full: 0, log_full: 0, torn: 0 };

  constructor(dir: string, opts: SegmentLogOptions) {
    this.dir = dir;
    this.#opts = opts;
    mkdirSync(dir, { recursive: true });
    const numbers = readdirSync(dir)
      .map((f) => NAME.exec(f)?.[1])
      .filter((n): n is string => n !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
    for (const n of numbers) this.#sizes.set(n, this.#sizeOf(n));
    const last = numbers.at(-1);
    if (last === undefined) this.#begin(1);
    else {
      this.#active = last;
      this.#fd = openSync(join(dir, fileName(last)), 'a+');
      this.#cutTornTail();
    }
  }

  #sizeOf(n: number): number {
    const fd = openSync(join(this.dir, fileName(n)), 'r');
    try {
      return fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
  }

  #begin(n: number) {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#active = n;
    this.#fd = openSync(join(this.dir, fileName(n)), 'a+');
    this.#sizes.set(n, 0);
  }

  /** The active segment up to its last whole, intact frame: a crash mid-write leaves a torn frame behind. */
  #cutTornTail() {
    const size = this.#sizes.get(this.#active)!;
    let good = 0;
    for (const frame of this.#scan(this.#active, 0, size)) {
      if (!frame.ok) break;
      good = frame.end;
    }
    if (good < size) {
      ftruncateSync(this.#fd, good);
      fsyncSync(this.#fd);
      this.#sizes.set(this.#active, good);
      this.dropped.torn++;
    }
  }

  /** Frame headers of segment `n` from `offset`, checked: each frame's end, and whether it is intact. */
  *#scan(n: number, offset: number, size: number, check = true): Generator<{ end: number; ok: boolean }> {
    const fd = n === this.#active ? this.#fd : openSync(join(this.dir, fileName(n)), 'r');
    const header = Buffer.alloc(FRAME_HEADER);
    let body = Buffer.alloc(64 * 1024);
    try {
      let o = offset;
      while (o < size) {
        if (o + FRAME_HEADER > size || readSync(fd, header, 0, FRAME_HEADER, o) < FRAME_HEADER) {
          yield { end: size, ok: false };
          return;
        }
        const length = header.readUInt32LE(0);
        if (length > MAX_FRAME || o + FRAME_HEADER + length > size) {
          yield { end: size, ok: false };
          return;
        }
        let ok = true;
        if (check) {
          if (body.length < length) body = Buffer.alloc(length);
          readSync(fd, body, 0, length, o + FRAME_HEADER);
          ok = crc32(body.subarray(0, length)) === header.readUInt32LE(4);
        }
        o += FRAME_HEADER + length;
        yield { end: o, ok };
        if (!ok) return;
      }
    } finally {
      if (n !== this.#active) closeSync(fd);
    }
  }

  /** Bytes in every segment. */
  get bytes(): number {
    let total = 0;
    for (const s of this.#sizes.values()) total += s;
    return total;
  }

  /** Where the oldest record still on disk starts. */
  get start(): Position {
    const first = this.#sizes.keys().next().value ?? this.#active;
    return { segment: first, offset: 0 };
  }

  /** Where the next record will be appended. */
  get end(): Position {
    return { segment: this.#active, offset: this.#sizes.get(this.#active)! };
  }

  #random10(): Uint8Array {
    if (this.#randomAt + 10 > this.#random.length) {
      randomFillSync(this.#random);
      this.#randomAt = 0;
    }
    const r = this.#random.subarray(this.#randomAt, this.#randomAt + 10);
    this.#randomAt += 10;
    return r;
  }

  /**
   * Append a chunk of frames (as the request path wrote them): each gets its id (a UUIDv7 of its time) and
   * its CRC, then the chunk goes to the file in one write. Returns the records appended; a chunk that would
   * pass the size bound, or that the disk refuses (ENOSPC), is dropped and counted, and the file is left
   * as it was.
   */
  append(chunk: Uint8Array): number {
    const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let count = 0;
    for (let o = 0; o + FRAME_HEADER <= chunk.byteLength; ) {
      const length = view.getUint32(o, true);
      const payload = chunk.subarray(o + FRAME_HEADER, o + FRAME_HEADER + length);
      // Strictly increasing ids: the same millisecond counts on; a clock that steps back keeps the last one;
      // past 4,096 in one millisecond, the next millisecond's.
      let ms = Math.floor(view.getFloat64(o + FRAME_HEADER + 8, true));
      if (ms <= this.#lastMs) {
        ms = this.#lastMs;
        if (++this.#counter > 0xfff) {
          ms++;
          this.#counter = 0;
        }
      } else this.#counter = 0;
      this.#lastMs = ms;
      writeUuidV7(payload, ID_OFFSET, ms, this.#random10(), this.#counter);
      view.setUint32(o + 4, crc32(payload), true);
      o += FRAME_HEADER + length;
      count++;
    }
    if (this.bytes + chunk.byteLength > this.#opts.maxBytes) {
      this.dropped.log_full += count;
      return 0;
    }
    if (
      this.#sizes.get(this.#active)! > 0 &&
      this.#sizes.get(this.#active)! + chunk.byteLength > this.#opts.segmentBytes
    ) {
      this.#begin(this.#active + 1);
    }
    const before = this.#sizes.get(this.#active)!;
    try {
      for (let written = 0; written < chunk.byteLength; ) {
        written += writeSync(this.#fd, chunk, written, chunk.byteLength - written);
      }
    } catch (err) {
      // A partial write would leave a torn frame mid-file: the segment goes back to where it was.
      try {
        ftruncateSync(this.#fd, before);
      } catch {}
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
        this.dropped.disk_full += count;
        return 0;
      }
      throw err;
    }
    this.#sizes.set(this.#active, before + chunk.byteLength);
    this.#unsynced = true;
    return count;
  }

  /**
   * Records from `from`, at most `maxRecords` and `maxBytes` (at least one), read from the files in blocks
   * of READ_BLOCK (a record larger than that is read alone). A frame found corrupt (open() cuts the active
   * segment's torn tail; elsewhere it means a damaged disk) ends its segment: the rest is skipped, counted.
   */
  read(from: Position, maxRecords: number, maxBytes: number): ReadBatch {
    const payloads: Uint8Array[] = [];
    const ends: Position[] = [];
    let bytes = 0;
    let pos = this.#normalize(from);
    const full = () => payloads.length >= maxRecords || (bytes > 0 && bytes >= maxBytes);
    while (!full()) {
      const size = this.#sizes.get(pos.segment);
      if (size === undefined) break;
      if (pos.offset >= size) {
        const next = this.#after(pos.segment);
        if (next === undefined) break;
        pos = { segment: next, offset: 0 };
        continue;
      }
      const owned = pos.segment !== this.#active;
      const fd = owned ? openSync(join(this.dir, fileName(pos.segment)), 'r') : this.#fd;
      let stop = false;
      try {
        while (!full() && pos.offset < size) {
          let buf = Buffer.allocUnsafe(Math.min(READ_BLOCK, size - pos.offset));
          let got = readSync(fd, buf, 0, buf.length, pos.offset);
          if (got >= FRAME_HEADER) {
            const first = buf.readUInt32LE(0);
            if (
              first <= MAX_FRAME &&
              FRAME_HEADER + first > got &&
              pos.offset + FRAME_HEADER + first <= size
            ) {
              // A record larger than a block: read it whole, alone (unless it would pass the byte bound).
              if (bytes > 0 && bytes + first > maxBytes) {
                stop = true;
                break;
              }
              buf = Buffer.allocUnsafe(FRAME_HEADER + first);
              got = readSync(fd, buf, 0, buf.length, pos.offset);
            }
          }
          let o = 0;
          while (!full() && o + FRAME_HEADER <= got) {
            const length = buf.readUInt32LE(o);
            if (length > MAX_FRAME || pos.offset + o + FRAME_HEADER + length > size) {
              this.#skipRest(pos.segment, pos.offset + o);
              stop = true;
              break;
            }
            if (o + FRAME_HEADER + length > got) break; // continues in the next block
            if (bytes > 0 && bytes + length > maxBytes) {
              stop = true;
              break;
            }
            const payload = buf.subarray(o + FRAME_HEADER, o + FRAME_HEADER + length);
            if (crc32(payload) !== buf.readUInt32LE(o + 4)) {
              this.#skipRest(pos.segment, pos.offset + o);
              stop = true;
              break;
            }
            payloads.push(payload);
            bytes += length;
            o += FRAME_HEADER + length;
            ends.push({ segment: pos.segment, offset: pos.offset + o });
          }
          pos = { segment: pos.segment, offset: pos.offset + o };
          if (stop || o === 0) break;
        }
      } finally {
        if (owned) closeSync(fd);
      }
      if (stop) break;
      if (pos.offset < (this.#sizes.get(pos.segment) ?? 0) && !full()) break;
    }
    return { payloads, ends, next: this.#normalize(pos), bytes };
  }

  /**
   * A corrupt frame at `at`: the records after it cannot be framed, so the segment ends there for reading
   * (appends go to a new segment if it was the active one).
   */
  #skipRest(segment: number, at: number) {
    this.dropped.torn++;
    this.#sizes.set(segment, at);
    if (segment === this.#active) this.#begin(this.#active + 1);
  }

  #after(segment: number): number | undefined {
    for (const n of this.#sizes.keys()) if (n > segment) return n;
    return undefined;
  }

  /** A position past a segment's end is the next segment's start (when there is one). */
  #normalize(pos: Position): Position {
    let p = pos;
    for (;;) {
      const size = this.#sizes.get(p.segment);
      if (size === undefined) {
        // Deleted already (everything in it written): start from the oldest segment still here after it.
        const next = this.#after(p.segment);
        return next === undefined ? this.end : { segment: next, offset: 0 };
      }
      if (p.offset < size || p.segment === this.#active) return p;
      const next = this.#after(p.segment);
      if (next === undefined) return p;
      p = { segment: next, offset: 0 };
    }
  }

  /** Records (frames) from `from` to the end: the backlog a restart finds. */
  countFrom(from: Position): number {
    let n = 0;
    let pos: Position | undefined = this.#normalize(from);
    while (pos) {
      const size = this.#sizes.get(pos.segment);
      if (size === undefined) break;
      // Headers only: the CRCs are checked as the records are read.
      for (const f of this.#scan(pos.segment, pos.offset, size, false)) if (f.ok) n++;
      const next = this.#after(pos.segment);
      pos = next === undefined ? undefined : { segment: next, offset: 0 };
    }
    return n;
  }

  /** Delete every segment wholly before `pos` (their records are in the store). */
  release(pos: Position): void {
    for (const n of [...this.#sizes.keys()]) {
      if (n >= pos.segment || n === this.#active) break;
      try {
        unlinkSync(join(this.dir, fileName(n)));
      } catch {}
      this.#sizes.delete(n);
    }
  }

  /** Flush appended records to the disk itself (the page cache already survives a process kill). */
  sync(): void {
    if (!this.#unsynced) return;
    this.#unsynced = false;
    try {
      fsyncSync(this.#fd);
    } catch {}
  }

  close(): void {
    this.sync();
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}
