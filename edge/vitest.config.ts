import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { defineConfig } from 'vitest/config';

const require = createRequire(import.meta.url);

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
