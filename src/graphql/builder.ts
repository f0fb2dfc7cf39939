import SchemaBuilder from '@pothos/core';
import ErrorsPlugin from '@pothos/plugin-errors';
import RelayPlugin from '@pothos/plugin-relay';
import { DateTimeResolver } from 'graphql-scalars';
import { type GraphQLContext, requireViewer } from './context.js';
import { decodeGlobalIdOrNothing, isNodeTypename } from './global-ids.js';

export const builder = new SchemaBuilder<{
  Context: GraphQLContext;
  Scalars: { DateTime: { Input: Date; Output: Date }; File: { Input: File; Output: never } };
  DefaultFieldNullability: false;
}>({
  plugins: [ErrorsPlugin, RelayPlugin],
  defaultFieldNullability: false,
  relay: {
    clientMutationId: 'omit',
    cursorType: 'String',
    nodesQueryOptions: false,
    decodeGlobalID: decodeGlobalIdOrNothing,
    nodeQueryOptions: {
      description: 'Fetches any object by its global id; null when missing or not yours.',
      // Authenticated before the id is looked at, as every other field is; an id of no loadable type is
      // missing, like an id that decodes to no task.
      resolve: (_root, args, context, info, resolveNode) => {
        requireViewer(context);
        return isNodeTypename(info.schema, args.id.typename) ? resolveNode(args.id) : null;
      },
    },
    nodeTypeOptions: { description: 'An object with a global id.' },
    pageInfoTypeOptions: { description: 'Where a page of a connection sits in the whole list.' },
  },
  errors: { defaultTypes: [] },
});

builder.addScalarType('DateTime', DateTimeResolver, {});

// Filled by yoga from a multipart request (the GraphQL multipart request spec); input only.
builder.scalarType('File', {
  description: 'A file sent in a multipart request (GraphQL multipart request spec), e.g. with curl -F.',
  serialize: () => {
    throw new Error('File is an input type');
  },
});

builder.queryType({ description: 'Reads. Every field needs a user token, except introspection.' });
builder.mutationType({ description: 'Writes. Every field needs a user token.' });
builder.subscriptionType({
  description: 'Live updates over graphql-ws or SSE. Every field needs a user token.',
});
