"""Integration tests: real RabbitMQ 3.10 nodes started by harness.seed.cluster.LocalCluster."""
