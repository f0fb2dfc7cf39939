import type { FakeKie } from '../fake-kie.js';
import type { BenchDatabase } from '../lib/database.js';
import type { ServerProcess } from '../lib/processes.js';

/** One line of the results table. Figures are numbers in `unit`; a ratio is gateway / baseline. */
export interface ResultRow {
  scenario: string;
  metric: string;
  unit: string;
  gateway: number | null;
  baseline: number | null;
  ratio: number | null;
  target: string;
  /** null: informational, no target. */
  pass: boolean | null;
  note?: string;
}

export interface ScenarioResult {
  rows: ResultRow[];
  /** Everything else worth keeping in the JSON file (distributions, CPU shares, plans). */
  details: Record<string, unknown>;
}

export interface ScenarioContext {
  quick: boolean;
  /** `--profile`: servers write CPU profiles, and scenarios that measure memory write heap snapshots. */
  profile: boolean;
  database: BenchDatabase;
  kie: FakeKie;
  /** Starts the gateway in its own process with the bench's environment plus `env`. */
  startGateway(env?: Record<string, string>): Promise<ServerProcess>;
  /** Starts bench/baselines/<name>.ts in its own process. */
  startBaseline(name: string, env?: Record<string, string>): Promise<ServerProcess>;
  /**
   * Starts a helper (`script`, speaking bench/lib/child.ts's IPC), such as a query-counting proxy; on either
   * core unless `cores` says otherwise; stopped with the scenario's servers.
   */
  startHelper(
    name: string,
    script: string,
    env: Record<string, string>,
    cores?: '0' | '0,1',
  ): Promise<ServerProcess>;
  log(message: string): void;
}

export interface Scenario {
  name: string;
  /**
   * Past this the harness counts the scenario as broken (default: 45 s quick, 240 s full). A scenario that
   * restarts servers mid-run needs longer than the others on a loaded machine.
   */
  timeoutMs?: { quick: number; full: number };
  run(context: ScenarioContext): Promise<ScenarioResult>;
}

/** A row whose target is "gateway / baseline ≤ limit" (or ≥ for throughput). */
export function ratioRow(
  fields: Omit<ResultRow, 'ratio' | 'pass'>,
  check: { atMost?: number; atLeast?: number; also?: boolean },
): ResultRow {
  const { gateway, baseline } = fields;
  const ratio = gateway !== null && baseline !== null && baseline !== 0 ? gateway / baseline : null;
  const pass =
    ratio !== null &&
    (check.atMost === undefined || ratio <= check.atMost) &&
    (check.atLeast === undefined || ratio >= check.atLeast) &&
    check.also !== false;
  return { ...fields, ratio, pass };
}
