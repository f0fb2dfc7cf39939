import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    env: { LOG_LEVEL: 'silent' },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: more workers only make the real-time tests of the state machine slower.
    maxWorkers: 2,
    pool: 'forks',
  },
});
