import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { getMainDefinition } from '@apollo/client/utilities';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import generated from './gql/possible-types.js';

export interface GatewayClient {
  apollo: ApolloClient;
  close(): Promise<void>;
}

/**
 * Apollo Client for avatar-gateway: queries and mutations over HTTP, subscriptions over graphql-ws on the
 * same path. The one setting a new user misses is `possibleTypes`: without it the cache cannot tell that
 * `InvalidInputError` implements `Error`, and `... on Error { code message }` comes back empty.
 */
export function createGatewayClient(graphqlUrl: string, token: string): GatewayClient {
  const authorization = `Bearer ${token}`;
  const http = new HttpLink({ uri: graphqlUrl, headers: { authorization } });
  const socket = createClient({
    url: graphqlUrl.replace(/^http/, 'ws'),
    // In a browser, leave webSocketImpl out.
    webSocketImpl: WebSocket,
    connectionParams: { authorization },
    retryAttempts: 0,
  });
  const isSubscription = ({ query }: ApolloLink.Operation) => {
    const definition = getMainDefinition(query);
    return definition.kind === 'OperationDefinition' && definition.operation === 'subscription';
  };
  const apollo = new ApolloClient({
    link: ApolloLink.split(isSubscription, new GraphQLWsLink(socket), http),
    cache: new InMemoryCache({ possibleTypes: generated.possibleTypes }),
  });
  return {
    apollo,
    close: async () => {
      apollo.stop();
      await socket.dispose();
    },
  };
}
