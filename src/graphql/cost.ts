/** One unit of the query cost limit (MAX_QUERY_COST) stands for about this much of an answer. */
export const BYTES_PER_COST_UNIT = 100;

/**
 * Field `extensions` for a value that may be up to `maxBytes` long, read by the cost limit
 * (src/http/query-cost.ts): a field counts 1 unless it says more, so a long string counts for its length.
 */
export const costOfValue = (maxBytes: number) => ({ cost: Math.ceil(maxBytes / BYTES_PER_COST_UNIT) });
