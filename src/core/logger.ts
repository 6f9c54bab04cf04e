/**
 * The logger the core writes to: pino's shape (fields first, then the message), so Node hands it a pino
 * logger as is; the edge a console-backed one. Every line is one JSON object with time, level and msg.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  debug(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
  isLevelEnabled(level: LogLevel): boolean;
}

/** Logs nothing (tests, and embedders that bring no logger). */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  isLevelEnabled: () => false,
};

const RANK: Record<LogLevel, number> = { debug: 20, info: 30, warn: 40, error: 50 };

/** One JSON line per call through `console` (Workers, where console output is the log). */
export function consoleLogger(level: LogLevel = 'info'): Logger {
  const write =
    (l: LogLevel) =>
    (fields: Record<string, unknown>, msg: string): void => {
      if (RANK[l] < RANK[level]) return;
      const line = JSON.stringify({ level: l, time: new Date().toISOString(), ...fields, msg });
      if (l === 'error') console.error(line);
      else if (l === 'warn') console.warn(line);
      else console.log(line);
    };
  return {
    debug: write('debug'),
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
    isLevelEnabled: (l) => RANK[l] >= RANK[level],
  };
}
