import { z } from 'zod';
import { type UpstreamSnapshot, upstreamStates } from '../tasks/states.js';

/**
 * kie's task record, as recordInfo's `data` and the callback's `data` carry it. Sources disagree on a few
 * names (`taskId` or `task_id`), and `resultJson` is a JSON string, so both are tolerated here, once.
 */
const recordSchema = z
  .object({
    taskId: z.string().min(1).optional(),
    task_id: z.string().min(1).optional(),
    state: z.enum(upstreamStates),
    resultJson: z.union([z.string(), z.object({ resultUrls: z.array(z.string()).optional() })]).nullish(),
    failCode: z.union([z.string(), z.number()]).nullish(),
    failMsg: z.string().nullish(),
    // A number in kie's examples; a numeric string is taken too, anything else is ignored rather than refused,
    // so a record whose cost is odd still moves the task on.
    consumeCredits: z
      .preprocess(
        (value) => (value == null || value === '' ? undefined : Number(value)),
        z.number().nonnegative().finite().optional(),
      )
      .catch(undefined),
  })
  .refine((record) => record.taskId ?? record.task_id, { message: 'taskId is missing', path: ['taskId'] });

// Built once: a zod schema costs more to build than to run, and every callback and poll parses one.
const resultJsonSchema = z.object({ resultUrls: z.array(z.string()).default([]) });

export class UpstreamRecordError extends Error {
  override name = 'UpstreamRecordError';
}

export function parseUpstreamRecord(data: unknown): UpstreamSnapshot {
  const parsed = recordSchema.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new UpstreamRecordError(
      `invalid task record: ${issue?.path.join('.') || 'data'} ${issue?.message ?? ''}`,
    );
  }
  const record = parsed.data;
  return {
    upstreamTaskId: (record.taskId ?? record.task_id) as string,
    state: record.state,
    resultUrls: record.state === 'success' ? parseResultUrls(record.resultJson) : [],
    failCode: record.failCode == null ? undefined : String(record.failCode),
    failMessage: record.failMsg ?? undefined,
    creditsCharged: record.consumeCredits,
  };
}

function parseResultUrls(
  resultJson: string | { resultUrls?: string[] | undefined } | null | undefined,
): string[] {
  if (!resultJson) return [];
  let value: unknown = resultJson;
  if (typeof resultJson === 'string') {
    try {
      value = JSON.parse(resultJson);
    } catch {
      throw new UpstreamRecordError('invalid task record: resultJson is not JSON');
    }
  }
  const urls = resultJsonSchema.safeParse(value);
  if (!urls.success) throw new UpstreamRecordError('invalid task record: resultJson has no resultUrls list');
  return urls.data.resultUrls;
}
