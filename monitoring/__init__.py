"""Pure renderers of what watches the cluster: alert rules, scrape objects, the dashboard.

Shared by the cloud program (``components.monitoring``) and the local harness (its Prometheus);
imports only ``contract``.
"""
