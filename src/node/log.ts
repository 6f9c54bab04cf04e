/**
 * The process's logger: pino, one JSON line per event on stdout, with an ISO time and the level's name.
 * Writes are asynchronous (a line costs this thread no write call; lines of a busy moment go out together)
 * and flushed at exit. LOG_LEVEL sets the level (checked with the rest of the configuration).
 */
import pino from 'pino';

const destination = pino.destination({ dest: 1, sync: false });

export const logger = pino(
  {
    level: process.env.LOG_LEVEL ?? 'info',
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    // Never a key or a feature value, whoever passes one by mistake.
    redact: {
      paths: ['authorization', 'x-api-key', 'key', 'features', 'inputs', '*.authorization', '*["x-api-key"]'],
      censor: '[redacted]',
    },
  },
  destination,
);

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
