import { describe, expect, it } from 'vitest';
import { parseUpstreamRecord, UpstreamRecordError } from '../../src/upstream/record.js';

const url = 'https://tempfile.aiquickdraw.com/out.mp4';

describe('parseUpstreamRecord', () => {
  it("reads kie's recordInfo data with resultJson as a JSON string", () => {
    expect(
      parseUpstreamRecord({
        taskId: 'task_kling_1',
        model: 'kling/ai-avatar-pro',
        state: 'success',
        param: '{"model":"kling/ai-avatar-pro"}',
        resultJson: JSON.stringify({ resultUrls: [url] }),
        failCode: '',
        failMsg: '',
        costTime: 8,
        completeTime: 1755599644000,
      }),
    ).toEqual({
      upstreamTaskId: 'task_kling_1',
      state: 'success',
      resultUrls: [url],
      failCode: '',
      failMessage: '',
    });
  });

  it.each([
    [100, 100],
    ['12.5', 12.5],
    [0, 0],
    [undefined, undefined],
    [null, undefined],
    ['lots', undefined],
    [-3, undefined],
  ])('reads consumeCredits %j as creditsCharged %j', (consumeCredits, creditsCharged) => {
    const snapshot = parseUpstreamRecord({ taskId: 't', state: 'success', resultJson: '', consumeCredits });
    expect(snapshot.creditsCharged).toBe(creditsCharged);
  });

  it('reads task_id when taskId is absent', () => {
    expect(parseUpstreamRecord({ task_id: 'task_2', state: 'generating' }).upstreamTaskId).toBe('task_2');
  });

  it('prefers taskId when both names are present', () => {
    expect(parseUpstreamRecord({ taskId: 'a', task_id: 'b', state: 'waiting' }).upstreamTaskId).toBe('a');
  });

  it('reads resultJson given as an object', () => {
    const snapshot = parseUpstreamRecord({
      taskId: 't',
      state: 'success',
      resultJson: { resultUrls: [url] },
    });
    expect(snapshot.resultUrls).toEqual([url]);
  });

  it.each([
    ['empty', ''],
    ['null', null],
    ['absent', undefined],
  ])('gives no result URLs while resultJson is %s', (_name, resultJson) => {
    expect(parseUpstreamRecord({ taskId: 't', state: 'queuing', resultJson }).resultUrls).toEqual([]);
  });

  it('ignores resultJson until the state is success', () => {
    const snapshot = parseUpstreamRecord({
      taskId: 't',
      state: 'generating',
      resultJson: JSON.stringify({ resultUrls: [url] }),
    });
    expect(snapshot.resultUrls).toEqual([]);
  });

  it('reads a failure with failCode as a number or a string', () => {
    expect(parseUpstreamRecord({ taskId: 't', state: 'fail', failCode: 500, failMsg: 'bad face' })).toEqual({
      upstreamTaskId: 't',
      state: 'fail',
      resultUrls: [],
      failCode: '500',
      failMessage: 'bad face',
    });
    expect(parseUpstreamRecord({ taskId: 't', state: 'fail', failCode: '422' }).failCode).toBe('422');
    const bare = parseUpstreamRecord({ taskId: 't', state: 'fail', failCode: null, failMsg: null });
    expect(bare.failCode).toBeUndefined();
    expect(bare.failMessage).toBeUndefined();
  });

  it.each([
    ['not an object', 'success'],
    ['null', null],
    ['no task id', { state: 'success' }],
    ['an empty task id', { taskId: '', state: 'success' }],
    ['an unknown state', { taskId: 't', state: 'done' }],
    ['no state', { taskId: 't' }],
    ['a numeric task id', { taskId: 42, state: 'waiting' }],
    ['resultJson that is not JSON', { taskId: 't', state: 'success', resultJson: '{resultUrls:' }],
    ['resultUrls that is not a list', { taskId: 't', state: 'success', resultJson: '{"resultUrls":"x"}' }],
    ['resultJson that is a number', { taskId: 't', state: 'success', resultJson: 7 }],
  ])('refuses %s with an UpstreamRecordError', (_name, data) => {
    expect(() => parseUpstreamRecord(data)).toThrow(UpstreamRecordError);
  });

  it('says which field is wrong', () => {
    expect(() => parseUpstreamRecord({ state: 'success' })).toThrow(/taskId/);
    expect(() => parseUpstreamRecord({ taskId: 't', state: 'done' })).toThrow(/state/);
  });
});
