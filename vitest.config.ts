import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // graphql 16 has no "exports" map: Node loads its CommonJS build for graphql-yoga, while Vite would pick
    // the "module" build for our sources. Two copies of GraphQLError make yoga mask every error thrown from
    // resolvers (UNAUTHENTICATED, NOT_FOUND, bad cursors) as INTERNAL_SERVER_ERROR in tests only.
    alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }],
  },
  test: {
    include: ['test/**/*.test.ts'],
    // test/build checks the compiled dist/: `npm run test:dist` builds it first, then runs only those.
    exclude: [...configDefaults.exclude, ...(process.env.DIST_SMOKE ? [] : ['test/build/**'])],
    env: { LOG_LEVEL: 'silent' },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: more workers only make the real-time tests of the state machine slower.
    maxWorkers: 2,
    pool: 'forks',
  },
});
