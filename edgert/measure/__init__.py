"""Measuring a model on this machine: `bench` (`edgert.bench`: latency, memory, temperature, energy),
`results` (the typed results and their JSON), `power_sampling` (reading power sensors beside a run),
`isolation` (CPU pinning and governors for quiet runs), `plot`, `agreement` (outputs against a reference: the
measures and thresholds per mode the converters and the fleet both judge by) and `health` (a rollout's check on a
board: outputs against the host's, latency against the version replaced; a bundle runs it). Above the runtime."""
