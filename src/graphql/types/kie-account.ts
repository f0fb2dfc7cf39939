import type { KieBalanceReading } from '../../upstream/kie-balance.js';
import { builder } from '../builder.js';
import { requireOperator } from '../context.js';

const KieAccount = builder.objectRef<KieBalanceReading & { createsPaused: boolean }>('KieAccount').implement({
  description: "The gateway's kie.ai account, for operators.",
  fields: (t) => ({
    creditBalance: t.exposeFloat('credits', {
      description: "kie.ai's credit balance, at most KIE_CREDITS_CACHE_MS old.",
    }),
    checkedAt: t.expose('checkedAt', { type: 'DateTime', description: 'When kie.ai reported that balance.' }),
    createsPaused: t.exposeBoolean('createsPaused', {
      description:
        'Whether this instance holds creates back because kie.ai answered 402 (out of credits) within KIE_CREDITS_COOLDOWN_MS; they answer INSUFFICIENT_CREDITS meanwhile.',
    }),
  }),
});

builder.queryField('kieAccount', (t) =>
  t.field({
    type: KieAccount,
    description:
      "Operators only (the AUTH_OPERATOR_ROLE in the token's AUTH_OPERATOR_CLAIM); others get a FORBIDDEN error. kie.ai's balance, cached.",
    resolve: async (_root, _args, context) => {
      requireOperator(context);
      const { balance, creditBreaker } = context.kieAccount;
      return { ...(await balance.current()), createsPaused: creditBreaker.refusing };
    },
  }),
);
