"""The local pod runner: the plan's Kubernetes objects run for real on three local nodes.

Pure model (no processes): ``objects`` (typed objects with Kubernetes defaults), ``fields``
(every field implemented, a reported delta, or refused by name), ``env``, ``volumes``,
``schedule``, ``secretfill``, ``workloads``, ``probes``. Running: ``kubelet`` (one pod: hooks,
probes, restarts, graceful deletion), ``store`` (the API server's records), ``controllers`` (the
workload controllers and the scheduler), ``kubectl`` (the operator's commands), ``faults`` (what
the world does to a cluster) and ``cluster`` (``KubeCluster``, the façade over them).
"""
