import { blockFieldSuggestionsPlugin } from '@escape.tech/graphql-armor-block-field-suggestions';
import { NoSchemaIntrospectionCustomRule } from 'graphql';
import type { Plugin } from 'graphql-yoga';

/**
 * Introspection off (INTROSPECTION_ENABLED=false): graphql-js's own rule on every validation, and the
 * "Did you mean ...?" suggestions masked, which would otherwise spell the schema out field by field.
 * `@graphql-yoga/plugin-disable-introspection` decides per HTTP request (`onRequestParse`), which graphql-ws
 * and the lean SSE path never go through; validation is where every transport meets.
 */
export function useIntrospectionDisabled(): Plugin[] {
  return [
    {
      onValidate({ addValidationRule }) {
        addValidationRule(NoSchemaIntrospectionCustomRule);
      },
    },
    blockFieldSuggestionsPlugin() as Plugin,
  ];
}
