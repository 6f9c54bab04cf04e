import { join } from 'node:path';
import { cloudflareTest } from '@cloudflare/vitest-pool-workers';
import { defineConfig } from 'vitest/config';

// The edge suite runs inside workerd, the runtime Cloudflare Workers run on. The root is the repository,
// so that the Worker's imports of ../models resolve as they do when wrangler bundles it.
export default defineConfig({
  root: join(import.meta.dirname, '..'),
  plugins: [cloudflareTest({ wrangler: { configPath: join(import.meta.dirname, 'wrangler.jsonc') } })],
  test: {
    name: 'edge',
    include: ['edge/test/**/*.test.ts'],
    testTimeout: 60_000,
  },
});
