import { cpuShare, type ServerProcess } from './processes.js';

/** Runs `work` and reports how much of its core the server used meanwhile: near 1 means the server was the bottleneck. */
export async function withCpu<T>(
  server: ServerProcess,
  work: () => Promise<T>,
): Promise<{ result: T; cpu: number }> {
  const before = await server.cpu();
  const result = await work();
  const after = await server.cpu();
  return { result, cpu: cpuShare(before, after) };
}
