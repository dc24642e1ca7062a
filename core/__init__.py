"""Infrastructure every layer may use: errors, DRF helpers, metrics, middleware, log filters,
outbound HTTP, the job worker, Redis clients, framework internals and the channel layer, PerLoop,
health probes, the tier marker. Imports nothing first-party but `wire`."""
