import { decodeGlobalID } from '@pothos/plugin-relay';
import { type GraphQLSchema, isObjectType } from 'graphql';

export interface DecodedGlobalId {
  typename: string;
  id: string;
}

/**
 * Decodes a global id, or names no type when the string is not one. A client's id that is not ours is a task
 * that does not exist, never an "Invalid global ID" error: every path answers a missing or foreign id alike.
 */
export function decodeGlobalIdOrNothing(globalId: string): DecodedGlobalId {
  try {
    const { typename, id } = decodeGlobalID(globalId);
    return { typename, id: unsliced(id) };
  } catch {
    return { typename: '', id: globalId };
  }
}

/**
 * The id as a string of its own. The decoder splits the decoded text, and V8 makes each part a slice that
 * keeps the whole text alive; a subscription keeps its task id (and the dispatcher its key) as long as it
 * lives, so the slice would hold the text twice over.
 */
function unsliced(id: string): string {
  return Buffer.from(id, 'utf8').toString('utf8');
}

/** Whether a decoded id names a type `node` can load: an object type of this schema implementing Node. */
export function isNodeTypename(schema: GraphQLSchema, typename: string): boolean {
  const type = typename ? schema.getType(typename) : undefined;
  return isObjectType(type) && type.getInterfaces().some((face) => face.name === 'Node');
}
