"""Demo data, the simulated market feed and the benchmark commands: what a developer runs, never production."""
