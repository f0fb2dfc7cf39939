import {
  type FieldNode,
  type FragmentDefinitionNode,
  type GraphQLError,
  type GraphQLField,
  type GraphQLNamedType,
  getNamedType,
  getNullableType,
  isInterfaceType,
  isListType,
  isObjectType,
  Kind,
  type SelectionSetNode,
  type ValidationContext,
  type ValidationRule,
} from 'graphql';

export interface QueryCostOptions {
  maxCost: number;
  /** The largest `first:` a paged field honours, also assumed when `first:` is a variable. */
  maxPageSize: number;
  /** What a paged field returns without `first:`. */
  defaultPageSize: number;
  /** The length assumed for a list that is not paged (a task's events, say). */
  assumedListSize: number;
  refuse: (message: string) => GraphQLError;
}

/**
 * A cost limit that multiplies by `first:`. Every field costs 1, or its `extensions.cost` (a long string
 * counts for its length, see src/graphql/cost.ts); the fields under a list cost as many times as the list is
 * long: the page size a `first:` above it asked for (a Relay connection's `edges`), or
 * `assumedListSize`. A variable `first:` counts as the largest page, so the cost depends on the document alone
 * and a document that passed once passes always (its validation is cached).
 *
 * Hand-written: @pothos/plugin-complexity computes from the variables and the context, which ties its result to
 * one request, and graphql-armor's cost limit has no list multiplier.
 */
export function queryCostRule(options: QueryCostOptions): ValidationRule {
  return (context) => ({
    OperationDefinition(operation) {
      const root = context.getSchema().getRootType(operation.operation);
      if (!root) return false;
      const cost = new QueryCost(context, options).ofSelections(operation.selectionSet, root, undefined);
      if (cost > options.maxCost) {
        context.reportError(
          options.refuse(`Query cost limit of ${options.maxCost} exceeded, found ${cost}.`),
        );
      }
      // Its fields were walked above; the rule needs nothing more of this operation.
      return false;
    },
  });
}

/** One operation's walk; fragments are costed once per page size they are spread under. */
class QueryCost {
  private readonly fragments = new Map<string, number>();
  private readonly walking = new Set<string>();

  constructor(
    private readonly context: ValidationContext,
    private readonly options: QueryCostOptions,
  ) {}

  ofSelections(selectionSet: SelectionSetNode, parent: GraphQLNamedType, page: number | undefined): number {
    let cost = 0;
    for (const selection of selectionSet.selections) {
      if (selection.kind === Kind.FIELD) {
        cost += this.ofField(selection, parent, page);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        const type = selection.typeCondition
          ? (this.context.getSchema().getType(selection.typeCondition.name.value) ?? parent)
          : parent;
        cost += this.ofSelections(selection.selectionSet, type, page);
      } else {
        const fragment = this.context.getFragment(selection.name.value);
        if (fragment) cost += this.ofFragment(fragment, page);
      }
    }
    return cost;
  }

  private ofFragment(fragment: FragmentDefinitionNode, page: number | undefined): number {
    const key = `${fragment.name.value}:${page ?? ''}`;
    const known = this.fragments.get(key);
    if (known !== undefined) return known;
    // A cycle is reported by graphql-js's own NoFragmentCycles rule; here it only must not loop.
    if (this.walking.has(key)) return 0;
    this.walking.add(key);
    const type = this.context.getSchema().getType(fragment.typeCondition.name.value);
    const cost = type ? this.ofSelections(fragment.selectionSet, type, page) : 0;
    this.walking.delete(key);
    this.fragments.set(key, cost);
    return cost;
  }

  private ofField(node: FieldNode, parent: GraphQLNamedType, page: number | undefined): number {
    if (node.name.value === '__typename') return 0;
    const field =
      isObjectType(parent) || isInterfaceType(parent) ? parent.getFields()[node.name.value] : undefined;
    if (!field) return 1;
    const own = typeof field.extensions.cost === 'number' ? field.extensions.cost : 1;
    if (!node.selectionSet) return own;
    const asked = this.pageSize(node, field);
    const isList = isListType(getNullableType(field.type));
    const times = isList ? (page ?? this.options.assumedListSize) : 1;
    // A page asked for above is the length of the first list below it (a connection's edges).
    const below = asked ?? (isList ? undefined : page);
    return own + times * this.ofSelections(node.selectionSet, getNamedType(field.type), below);
  }

  /** The page a `first:` argument asks for, or undefined when the field takes none. */
  private pageSize(node: FieldNode, field: GraphQLField<unknown, unknown>): number | undefined {
    const definition = field.args.find((arg) => arg.name === 'first');
    if (!definition) return undefined;
    const { maxPageSize, defaultPageSize } = this.options;
    const value = node.arguments?.find((arg) => arg.name.value === 'first')?.value;
    if (!value) {
      return typeof definition.defaultValue === 'number' ? definition.defaultValue : defaultPageSize;
    }
    if (value.kind === Kind.INT) return Math.min(maxPageSize, Math.max(0, Number(value.value)));
    return maxPageSize;
  }
}
