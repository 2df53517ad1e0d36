"""The seed's setup, kept to show what it lost: Debian's RabbitMQ 3.10 cluster booted from the
same renderer as Kubernetes (``cluster``) and Celery worker processes on the host (``workers``).
Built on ``harness.runtime``; the pod runner (``harness.kube``) never imports it.
"""
