/** `npm start`: serve the models in MODELS_DIR (the shipped ones by default). */
import { loadConfig } from './config.js';
import { log } from './log.js';
import { startServer } from './server.js';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig();
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}

const server = await startServer(config);
log('info', 'listening', { url: server.url, models_dir: config.modelsDir, pool_size: config.poolSize });

let stopping = false;
/** Signals this close together are one signal delivered twice. */
const SAME_SIGNAL_MS = 250;
/** The graceful path: drain, close the pool, flush the audit log, then exit with `code`. */
function stop(reason: string, code: number) {
  if (stopping) return;
  stopping = true;
  log('info', 'shutting down', { reason });
  server.close().then(
    () => {
      log('info', 'stopped');
      process.exit(code);
    },
    (err) => {
      log('error', 'shutdown failed', { error: String(err) });
      process.exit(1);
    },
  );
}

// Models that fail to load leave nothing to serve; a shutdown during loading is not a failure.
server.ready.catch(() => {
  if (!stopping) process.exit(1);
});

let firstSignalAt = 0;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (!stopping) {
      firstSignalAt = performance.now();
      return stop(signal, 0);
    }
    // Ctrl-C under `npm start` arrives twice at once: from the terminal to the whole process group, and
    // forwarded by npm. One press is one signal; a later one means "do not wait for the drain".
    if (performance.now() - firstSignalAt < SAME_SIGNAL_MS) return;
    log('warn', 'second signal: exiting without finishing the drain', { signal });
    process.exit(1);
  });
}

// A fatal error is logged and then takes the graceful path, so answered requests keep their audit records.
for (const event of ['uncaughtException', 'unhandledRejection'] as const) {
  process.on(event, (err) => {
    log('error', event, { error: String((err as Error)?.stack ?? err) });
    stop(event, 1);
  });
}
