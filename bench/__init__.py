"""The benchmark harness (SPEC §10): ``python -m bench`` (full, under ten minutes) or ``--quick``.

It starts real Redis behind a counting proxy, the Slack and Assistants emulators and one
``switchboard run`` process in Slack HTTP mode, drives it with signed Slack events, and reports
ack latency, gateway-added latency, CPU per message, Redis round trips, memory per idle
conversation and throughput, as a table and as JSON in ``bench/results/``.
"""
