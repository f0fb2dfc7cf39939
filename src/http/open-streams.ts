/**
 * One count of each user's open streams, over every transport together: a graphql-ws socket, a lean SSE
 * stream, a stream of yoga's SSE and one of graphql-sse each take one slot of MAX_SOCKETS_PER_USER. Counted per
 * instance: a user's connections to one instance are what that instance's memory pays for.
 */
export class OpenStreams {
  private readonly perUser = new Map<string, number>();

  constructor(readonly maxPerUser: number) {}

  /** Takes one of the user's slots; false when all are taken. */
  tryOpen(userId: string): boolean {
    const open = this.perUser.get(userId) ?? 0;
    if (open >= this.maxPerUser) return false;
    this.perUser.set(userId, open + 1);
    return true;
  }

  /** Gives back a slot taken by tryOpen. */
  close(userId: string): void {
    const left = (this.perUser.get(userId) ?? 1) - 1;
    if (left <= 0) this.perUser.delete(userId);
    else this.perUser.set(userId, left);
  }

  openFor(userId: string): number {
    return this.perUser.get(userId) ?? 0;
  }
}
