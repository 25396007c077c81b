"""Read-only views over the gateway for people and dashboards (the web console, the CLI, scripts).

Everything here is derived from what the gateway already has: its own Prometheus registry (a windowed summary of
request rate, error rate and latency quantiles per model), the caller's principal, and the public JSON API, which
the views call in process as the caller (adapter manifests, evaluation reports, run comparisons). Nothing here
changes state.
"""
