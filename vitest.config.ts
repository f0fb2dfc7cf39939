import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Files that assert issue 8's event-loop bound (LOOP_STALL_LIMIT_MS in test/helpers/attack.ts). The delay they
 * measure includes the time the process waits for a core, so they run one at a time after every other file:
 * with two cores shared by two test workers, a busy neighbour would stall the loop as much as an attack.
 */
const ISOLATED = [
  'test/security/query-flood.test.ts',
  'test/security/directive-flood.test.ts',
  'test/security/amplification.test.ts',
];

export default defineConfig({
  resolve: {
    // graphql 16 has no "exports" map: Node loads its CommonJS build for graphql-yoga, while Vite would pick
    // the "module" build for our sources. Two copies of GraphQLError make yoga mask every error thrown from
    // resolvers (UNAUTHENTICATED, NOT_FOUND, bad cursors) as INTERNAL_SERVER_ERROR in tests only.
    alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }],
  },
  test: {
    env: { LOG_LEVEL: 'silent' },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: more workers only make the real-time tests of the state machine slower.
    maxWorkers: 2,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'shared',
          include: ['test/**/*.test.ts'],
          // test/build checks the compiled dist/: `npm run test:dist` builds it first, then runs only those.
          exclude: [
            ...configDefaults.exclude,
            ...ISOLATED,
            ...(process.env.DIST_SMOKE ? [] : ['test/build/**']),
          ],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'isolated',
          include: ISOLATED,
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
