import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

// miniflare's local Hyperdrive proxy (in this, the test host's process) listens for errors on its database
// side only (cloudflare/workers-sdk#15768, open): when workerd resets its side of a proxied connection, as
// it may when a test's isolate is torn down, the unheard ECONNRESET ends the whole run after every test has
// passed (seen twice in CI). No code of this project runs in this process; any other error still ends it.
process.on('uncaughtException', (err: NodeJS.ErrnoException) => {
  if (err.code === 'ECONNRESET' && err.syscall === 'read') {
    console.warn(`ignored a connection reset in the test host (workers-sdk#15768): ${err.message}`);
    return;
  }
  throw err;
});

// The edge suite runs inside workerd, the runtime Cloudflare Workers run on. The root is the repository,
// so that the Worker's imports of ../models resolve as they do when wrangler bundles it.
export default defineConfig({
  root: join(import.meta.dirname, '..'),
  plugins: [cloudflareTest({ wrangler: { configPath: join(import.meta.dirname, 'wrangler.jsonc') } })],
  // pg's CommonJS files as wrangler bundles them (node-postgres #3700): the test pool resolves pg's
  // require('pg-protocol') to its ES module build, which require cannot load, and require('pg-cloudflare')
  // to its empty non-workerd stub. Point both at the CommonJS files wrangler's bundle uses.
  resolve: {
    alias: [
      { find: /^pg-protocol$/, replacement: require.resolve('pg-protocol') },
      {
        find: /^pg-cloudflare$/,
        replacement: join(dirname(require.resolve('pg-cloudflare/package.json')), 'dist', 'index.js'),
      },
    ],
  },
  test: {
    name: 'edge',
    include: ['edge/test/**/*.test.ts'],
    testTimeout: 60_000,
  },
});
