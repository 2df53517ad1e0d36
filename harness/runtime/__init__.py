"""The local container runtime: root filesystems and images, network namespaces, process groups,
ports and polling. It knows nothing of Kubernetes or of the seed cluster, which both build on it.
"""
