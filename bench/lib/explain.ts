import { drizzle } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as schema from '../../src/db/schema.js';
import { TaskRepository } from '../../src/tasks/repository.js';

/**
 * The plan Postgres picks for the gateway's own history query: the repository runs `listForUser` on a
 * connection that records the SQL it sends, and that exact SQL and its parameters are EXPLAINed.
 */

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Filter?: string;
  'Rows Removed by Filter'?: number;
  'Actual Rows'?: number;
  Plans?: PlanNode[];
}

export interface HistoryPlan {
  sql: string;
  usesIndex: boolean;
  nodeType: string | null;
  indexCond: string | null;
  filter: string | null;
  rowsRemovedByFilter: number;
  /** A Sort node sits above the scan: the index did not give the order, every matching row was read. */
  sorted: boolean;
  executionMs: number;
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

export async function explainHistory(
  url: string,
  userId: string,
  after: { createdAt: Date; id: string },
  indexName: string,
): Promise<HistoryPlan> {
  let captured: { text: string; params: unknown[] } | undefined;
  const client = postgres(url, {
    max: 1,
    onnotice: () => {},
    debug: (_connection, text, params) => {
      if (/from "avatar_tasks"/i.test(text)) captured = { text, params };
    },
  });
  try {
    const repository = new TaskRepository(drizzle(client, { schema }));
    await repository.listForUser(userId, { first: 20, after });
    if (!captured) throw new Error('the history query was not captured');
    const [row] = await client.unsafe(
      `explain (analyze, format json) ${captured.text}`,
      captured.params as postgres.ParameterOrJSON<never>[],
    );
    const [explained] = (
      row as unknown as { 'QUERY PLAN': Array<{ Plan: PlanNode; 'Execution Time': number }> }
    )['QUERY PLAN'];
    if (!explained) throw new Error('EXPLAIN returned nothing');
    const scan = nodes(explained.Plan).find((node) => node['Index Name'] === indexName);
    return {
      sql: captured.text,
      usesIndex: scan !== undefined && /Index/.test(scan['Node Type']),
      nodeType:
        scan?.['Node Type'] ??
        nodes(explained.Plan)
          .map((node) => node['Node Type'])
          .join(' > '),
      indexCond: scan?.['Index Cond'] ?? null,
      filter: scan?.Filter ?? null,
      rowsRemovedByFilter: scan?.['Rows Removed by Filter'] ?? 0,
      sorted: nodes(explained.Plan).some((node) => node['Node Type'] === 'Sort'),
      executionMs: explained['Execution Time'],
    };
  } finally {
    await client.end({ timeout: 5 });
  }
}
