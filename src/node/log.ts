/**
 * The process's logger: pino, one JSON line per event on stdout, with an ISO time and the level's name.
 * Writes are asynchronous (a line costs this thread no write call; a turn's lines go out together, see
 * log-destination.ts) and flushed at exit. LOG_LEVEL sets the level (checked with the rest of the configuration).
 */
import pino from 'pino';
import type { Logger } from '../core/logger.js';
import { createLineWriter } from './log-destination.js';

const destination = createLineWriter(1);
process.on('exit', () => destination.flushSync());

/** Fields never written, whoever passes one by mistake: keys and feature values. */
const SECRET_FIELDS = ['authorization', 'x-api-key', 'key', 'features', 'inputs'];

/** The process's events: secret fields redacted at the top level and one level down. */
export const logger = pino(
  {
    level: process.env.LOG_LEVEL ?? 'info',
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: [...SECRET_FIELDS, '*.authorization', '*["x-api-key"]'], censor: '[redacted]' },
  },
  destination,
);

const RANK = { debug: 20, info: 30, warn: 40, error: 50, silent: Number.POSITIVE_INFINITY } as const;
type Level = keyof typeof RANK;
const SECRET = new Set(SECRET_FIELDS);

/** Strings that JSON writes as they are: printable ASCII without `"` or `\\`. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;
const jsonValue = (v: unknown): string => {
  if (typeof v === 'string') return v.length < 64 && PLAIN.test(v) ? `"${v}"` : JSON.stringify(v);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : 'null';
  if (v === null || typeof v === 'boolean') return String(v);
  return JSON.stringify(v) ?? 'null';
};

/**
 * The lines the core writes per request (access lines, request errors), in pino's format (level name, ISO
 * time, the fields, msg) but written directly: the core builds them from flat fields of its own, so the
 * generic machinery is not needed, and on this path it showed: 60,000 access lines cost 5–7 µs of CPU each
 * written here (2.5 µs once the repeated parts were made once), 11–19 µs through pino with its async
 * destination and wildcard redaction (a microbenchmark on this machine), for a line written for every
 * request. Secret field names are redacted as pino does.
 */
function createRequestLogger(write: (line: string) => void): Logger & { level: Level } {
  let min: number = RANK.info;
  let level: Level = 'info';
  // Per line, what repeats is made once: the time's text per millisecond (lines of one ms share it), each
  // field name's `,"name":` (redacted ones with their value), and the message's JSON.
  let lastMs = -1;
  let lastTime = '';
  const keyText = new Map<string, string>();
  const keyOf = (k: string) => {
    let t = keyText.get(k);
    if (t === undefined) {
      t = `,${JSON.stringify(k)}:${SECRET.has(k) ? '"[redacted]"' : ''}`;
      if (keyText.size < 256) keyText.set(k, t);
    }
    return t;
  };
  const msgText = new Map<string, string>();
  const line = (at: Exclude<Level, 'silent'>) => {
    const head = `{"level":"${at}","time":"`;
    return (fields: Record<string, unknown>, msg: string) => {
      if (RANK[at] < min) return;
      const now = Date.now();
      if (now !== lastMs) {
        lastMs = now;
        lastTime = new Date(now).toISOString();
      }
      let s = `${head}${lastTime}"`;
      for (const k in fields) {
        const v = fields[k];
        if (v === undefined) continue;
        const key = keyOf(k);
        s += key.endsWith(':') ? key + jsonValue(v) : key;
      }
      let m = msgText.get(msg);
      if (m === undefined) {
        m = `,"msg":${JSON.stringify(msg)}}\n`;
        if (msgText.size < 256) msgText.set(msg, m);
      }
      write(s + m);
    };
  };
  return {
    debug: line('debug'),
    info: line('info'),
    warn: line('warn'),
    error: line('error'),
    isLevelEnabled: (l) => RANK[l] >= min,
    get level() {
      return level;
    },
    set level(l: Level) {
      level = l;
      min = RANK[l];
    },
  };
}

export const requestLogger = createRequestLogger((l) => destination.write(l));
requestLogger.level = (process.env.LOG_LEVEL as Level | undefined) ?? 'info';

/** One event: `log('warn', 'audit store unavailable', { error })`. */
export const log = (level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}) =>
  logger[level](fields, msg);

/** Writes what is buffered now (before an exit that does not run exit handlers). */
export const flushLogs = () => {
  try {
    destination.flushSync();
  } catch {
    // Not open yet, or already closed: nothing buffered to lose.
  }
};
