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
server.ready.catch(() => process.exit(1));

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log('info', 'shutting down', { signal });
    server.close().then(
      () => {
        log('info', 'stopped');
        process.exit(0);
      },
      (err) => {
        log('error', 'shutdown failed', { error: String(err) });
        process.exit(1);
      },
    );
  });
}
