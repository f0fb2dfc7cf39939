import { randomBytes } from 'node:crypto';
import type { DeadlineClock, Expirable } from './deadline-clock.js';

export interface SseReservationLimits {
  /** A reservation nobody listens on is dropped this long after it was made (or last seen in use). */
  ttlMs: number;
  /** Reservations one user may hold at once, in use or not. */
  maxPerUser: number;
}

/**
 * What happened to a reservation's stream in graphql-sse's handler: a listener holds it open, or it has been
 * disposed (graphql-sse forgets a stream once its listener leaves, and the probe disposes an unused one).
 */
export type StreamProbe = (token: string) => Promise<'open' | 'gone'>;

class Reservation implements Expirable {
  constructor(
    readonly token: string,
    readonly userId: string,
    private readonly owner: SseReservations,
  ) {}

  expire(): void {
    this.owner.check(this);
  }
}

/**
 * graphql-sse's "single connection mode" reservations (`PUT /graphql/stream`), minted here instead of by the
 * client, each bound to the user whose token made it. graphql-sse keeps a reserved stream until a listener
 * comes and goes, so one that is never listened on would stay forever: past `ttlMs` each reservation is
 * probed, and dropped unless a listener holds it.
 */
export class SseReservations {
  private readonly byToken = new Map<string, Reservation>();
  private readonly perUser = new Map<string, number>();
  private probe: StreamProbe = async () => 'gone';

  constructor(
    private readonly limits: SseReservationLimits,
    private readonly clock: DeadlineClock,
  ) {}

  /** How to ask graphql-sse's handler about a stream (it exists only once the handler does). */
  useProbe(probe: StreamProbe): void {
    this.probe = probe;
  }

  /** A new reservation token for the user, or undefined when they hold as many as allowed. */
  reserve(userId: string): string | undefined {
    const held = this.perUser.get(userId) ?? 0;
    if (held >= this.limits.maxPerUser) return undefined;
    this.perUser.set(userId, held + 1);
    const reservation = new Reservation(randomBytes(24).toString('base64url'), userId, this);
    this.byToken.set(reservation.token, reservation);
    this.clock.at(reservation, Date.now() + this.limits.ttlMs);
    return reservation.token;
  }

  /** The user a reservation belongs to; undefined for a token this server did not mint or has dropped. */
  ownerOf(token: string): string | undefined {
    return this.byToken.get(token)?.userId;
  }

  /** Called by the clock when a reservation's time is up. */
  check(reservation: Reservation): void {
    this.probe(reservation.token).then(
      (state) => (state === 'open' ? this.keep(reservation) : this.drop(reservation)),
      () => this.drop(reservation),
    );
  }

  private keep(reservation: Reservation): void {
    if (this.byToken.get(reservation.token) === reservation) {
      this.clock.at(reservation, Date.now() + this.limits.ttlMs);
    }
  }

  private drop(reservation: Reservation): void {
    if (this.byToken.get(reservation.token) !== reservation) return;
    this.byToken.delete(reservation.token);
    const left = (this.perUser.get(reservation.userId) ?? 1) - 1;
    if (left <= 0) this.perUser.delete(reservation.userId);
    else this.perUser.set(reservation.userId, left);
  }
}
