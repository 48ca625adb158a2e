"""Measuring a model on this machine: `bench` (`edgert.bench`: latency, memory, temperature, energy),
`results` (the typed results and their JSON), `power_sampling` (reading power sensors beside a run),
`isolation` (CPU pinning and governors for quiet runs) and `plot`. Above the runtime."""
