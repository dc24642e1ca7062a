"""The background-job schedule (periodic jobs, the in-process starter) and the `worker` command."""
