import { defineConfig } from 'vitest/config';

// Lab tests create namespaces and processes: run files one at a time, with generous time limits
// (these are not performance assertions, only bounds on hangs).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    pool: 'forks',
  },
});
