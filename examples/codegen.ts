import type { CodegenConfig } from '@graphql-codegen/cli';

/** Types and typed documents from the gateway's printed schema, which CI keeps in step with the code. */
const config: CodegenConfig = {
  schema: '../schema/schema.graphql',
  documents: ['src/**/*.ts', '!src/gql/**'],
  // `.js` on relative imports, as Node's ES modules need.
  emitLegacyCommonJSImports: false,
  generates: {
    'src/gql/': {
      preset: 'client',
      presetConfig: { fragmentMasking: false },
      // Enums as unions of string literals: `switch (error.code)` is checked for every value.
      config: { enumsAsTypes: true, useTypeImports: true, scalars: { DateTime: 'string' } },
    },
    // Apollo's cache must know which types implement `Error` and make up the unions, or it drops the
    // fields asked for with `... on Error` (code, message) without a word.
    'src/gql/possible-types.ts': { plugins: ['fragment-matcher'], config: { useExplicitTyping: true } },
  },
};

export default config;
