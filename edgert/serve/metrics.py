"""`/metrics` in the Prometheus text format, with prometheus-client (one registry per server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

_LATENCY_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The server's counters, histograms and gauges, all labelled by model."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("edgert_requests", "Inference requests by model and HTTP status.",
                                ("model", "status"), registry=r)
        self.queue_wait = Histogram("edgert_queue_wait_seconds", "Time a request waited for its accelerator.",
                                    ("model",), buckets=_LATENCY_BUCKETS, registry=r)
        self.compute = Histogram("edgert_compute_seconds", "Time of the invoke that ran the request (its batch).",
                                 ("model",), buckets=_LATENCY_BUCKETS, registry=r)
        self.request_latency = Histogram("edgert_request_seconds", "Time from a request's arrival to its answer.",
                                         ("model",), buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edgert_batch_size", "Rows per invoke (dynamic batching stacks requests).",
                                    ("model",), buckets=_BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("edgert_queue_depth", "Requests waiting, per model.", ("model",), registry=r)
        self.model_info = Gauge("edgert_model_info", "1 for the version and delegate each model is served with.",
                                ("model", "version", "delegate", "accelerator"), registry=r)
        self.power = Gauge("edgert_power_milliwatts", "The power sensor's last reading (the board's draw).",
                           ("sensor",), registry=r)
        self.energy = Counter("edgert_energy_millijoules", "Energy measured by the power sensor while serving.",
                              ("sensor",), registry=r)
        self.energy_per_inference = Gauge(
            "edgert_energy_per_inference_millijoules",
            "Energy of the last window (1 s or more) divided by the inferences run in it, idle draw included.",
            ("sensor",), registry=r)

    def on_load(self, entry, accelerator: str) -> None:
        for labels in list(self.model_info._metrics):  # one series per model: drop the version it replaced
            if labels[0] == entry.name:
                self.model_info.remove(*labels)
        self.model_info.labels(entry.name, entry.version, entry.model.delegation.used, accelerator).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
