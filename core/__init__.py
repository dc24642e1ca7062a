"""Infrastructure every layer may use: errors, DRF helpers, metrics, middleware, log filters,
outbound HTTP, the job worker, Redis clients. Imports nothing first-party but `wire`."""
