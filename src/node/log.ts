/** One JSON line per event on stdout (warnings and errors on stderr). */
export const log = (level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}) =>
  console[level === 'info' ? 'log' : level](
    JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }),
  );
