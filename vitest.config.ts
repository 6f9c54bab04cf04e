import { defineConfig } from 'vitest/config';

// The Node suite. The workerd suite has its own config (edge/vitest.config.ts) and run: as a Vitest
// project it would be re-rooted at edge/, where the Worker's imports of ../models no longer resolve.
export default defineConfig({
  test: {
    name: 'node',
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Servers under test each run a worker pool: two files at a time suit a 2-core machine.
    maxWorkers: 2,
  },
});
