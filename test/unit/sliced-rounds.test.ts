import { afterEach, describe, expect, it } from 'vitest';
import { SlicedRounds } from '../../src/http/sliced-rounds.js';

/** The shared timer behind the socket heartbeat and the SSE keep-alive. */
describe('SlicedRounds', () => {
  let rounds: SlicedRounds<number> | undefined;
  afterEach(() => rounds?.stop());

  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  /** The visits of each tick, in order: a tick's visits run in one turn of the event loop. */
  function recordTicks() {
    const ticks: number[][] = [];
    let current: number[] | undefined;
    const visit = (member: number) => {
      if (!current) {
        current = [];
        ticks.push(current);
        setImmediate(() => {
          current = undefined;
        });
      }
      current.push(member);
    };
    return { ticks, visit };
  }

  it("by default visits a heartbeat's sockets about 50 ms apart, never hundreds in one turn", async () => {
    const { ticks, visit } = recordTicks();
    // The socket heartbeat's period, and the sockets of the idle-subscribers bench on one instance.
    rounds = new SlicedRounds<number>(12_000, visit);
    for (let member = 0; member < 16_667; member++) rounds.add(member);
    await pause(700);
    expect(ticks.length).toBeGreaterThanOrEqual(5);
    const perTick = Math.ceil((16_667 * 50) / 12_000);
    expect(Math.max(...ticks.map((tick) => tick.length))).toBeLessThanOrEqual(perTick);
  });

  it('visits every member once per period, in slices of the period', async () => {
    const { ticks, visit } = recordTicks();
    rounds = new SlicedRounds<number>(400, visit, 20);
    for (let member = 0; member < 2_000; member++) rounds.add(member);
    await pause(400 + 100);
    rounds.stop();
    // 400 ms in ticks of 20 ms: 20 slices of 100 members, each member once in its first period.
    expect(Math.max(...ticks.map((tick) => tick.length))).toBeLessThanOrEqual(100);
    expect(new Set(ticks.flat().slice(0, 2_000)).size).toBe(2_000);
  });

  it('no longer visits a member once it is deleted', async () => {
    const visited = new Set<number>();
    rounds = new SlicedRounds<number>(100, (member) => visited.add(member), 20);
    for (let member = 0; member < 50; member++) rounds.add(member);
    rounds.delete(7);
    await pause(250);
    expect(visited.has(7)).toBe(false);
    expect(visited.size).toBe(49);
  });
});
