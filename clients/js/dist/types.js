/**
 * The wire types of the two protocols: every message the server sends on `/ws` and `/ws/orders`
 * (docs/reference/events.md, ws.md, ws-orders.md) and every message a client sends.
 */
// ─── close codes (docs/reference/close-codes.md) ─────────────────────────────────────────────────
export const CloseCode = {
    INVALID_PAYLOAD: 1007,
    MESSAGE_TOO_BIG: 1009,
    AUTHENTICATION_FAILED: 4001,
    TOKEN_EXPIRED: 4002,
    ACCESS_REVOKED: 4003,
    DISCONNECTED_BY_STAFF: 4004,
    FLOODING: 4008,
    SLOW_CONSUMER: 4009,
    TRY_AGAIN_LATER: 4013,
    TOO_MANY_CONNECTIONS: 4029,
    TOO_MANY_ATTEMPTS: 4030,
    IDLE: 4040,
};
