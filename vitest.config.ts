import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Servers under test each run a worker pool: two files at a time suit a 2-core machine.
    maxWorkers: 2,
  },
});
