"""The contract between the cloud program, the broker config, the worker app and the harness.

Standard library only, and imports nothing of the project (an import-linter contract): every
layer may import it, so each shared name or number is defined here once. ``timing`` holds the
numbers that tie Celery, Kubernetes and RabbitMQ together; ``wire`` the names on the wire.
"""
