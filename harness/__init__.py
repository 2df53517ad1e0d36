"""The local stand-in for the cloud, in three wings and a top:

* ``runtime``: root filesystems and images, network namespaces, process groups, ports, polling;
* ``kube``: the pod runner (boots a plan's Kubernetes objects; knows Kubernetes, not this project:
  project rules such as which Secrets to fill are passed in);
* ``seed``: the seed's Debian RabbitMQ 3.10 cluster and its worker processes;
* ``prometheus``: a real Prometheus scraping the pod runner's pods.

Supervises what it starts (sessions, group kills, records of crash leftovers) and stops only that.
Never imports the drills or the benchmarks, which build on it.
"""
