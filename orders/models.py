"""Orders, order updates and trades (filled by the orders issue)."""
