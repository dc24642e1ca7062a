/** When to reconnect: the seeds' schedules, and what each close code means for a client. */

export interface ReconnectPolicy {
  /** Enable automatic reconnection (seed 004's `autoReconnect`). */
  autoReconnect: boolean;
  /** The first delay, in ms; each further attempt doubles it. */
  baseDelay: number;
  /** The cap on the doubling delay, in ms (seed 004's `reconnectMaxDelay`). */
  maxDelay: number;
  /** Attempts before giving up with `noreconnect` (seed 000's `maxReconnectAttempts`, seed 004's `reconnectMaxTries`). */
  maxAttempts: number;
  /** The least delay, in ms, after the server closed for flooding or a tier limit (4008, 4029, 4030). */
  throttledDelay: number;
  /** Up to this fraction is taken off each delay at random, so that a fleet of clients does not reconnect in step. */
  jitter: number;
}

/** Seed 000 (`AxisorWebSocketClient` and its `WebSocketReconnectionManager`): 1, 2, 4, 8, 16 s; 5 attempts; at most 30 s. */
export const EVENTS_RECONNECT: ReconnectPolicy = {
  autoReconnect: true,
  baseDelay: 1000,
  maxDelay: 30_000,
  maxAttempts: 5,
  throttledDelay: 60_000,
  jitter: 0.25,
};

/** Seed 004 (the order-updates worker): 1, 2, 4, 8, then 10 s; 300 attempts. */
export const ORDERS_RECONNECT: ReconnectPolicy = {
  autoReconnect: true,
  baseDelay: 1000,
  maxDelay: 10_000,
  maxAttempts: 300,
  throttledDelay: 60_000,
  jitter: 0.25,
};

/**
 * Close codes after which reconnecting cannot help: authentication failed (4001), access revoked
 * (4003), disconnected by staff (4004). The client stops with `noreconnect`.
 */
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([4001, 4003, 4004]);

/**
 * Close codes that mean "you are too many or too fast": sustained flooding (4008), the tier's
 * concurrent-connection limit (4029), the tier's connection attempts per minute (4030). Reconnecting
 * at once would only be refused again, so the client waits at least `throttledDelay`.
 */
export const THROTTLED_CLOSE_CODES: ReadonlySet<number> = new Set([4008, 4029, 4030]);

/**
 * The delay in ms before reconnect attempt `attempt` (1 for the first) after a close with `code`,
 * or `null` when the client must not reconnect. `random` is for tests.
 */
export function reconnectDelay(
  policy: ReconnectPolicy,
  attempt: number,
  code?: number,
  random: () => number = Math.random,
): number | null {
  if (!policy.autoReconnect || attempt > policy.maxAttempts) return null;
  if (code !== undefined && FINAL_CLOSE_CODES.has(code)) return null;
  let delay = Math.min(policy.baseDelay * 2 ** (attempt - 1), policy.maxDelay);
  if (code !== undefined && THROTTLED_CLOSE_CODES.has(code)) delay = Math.max(delay, policy.throttledDelay);
  return Math.round(delay * (1 - policy.jitter * random()));
}
