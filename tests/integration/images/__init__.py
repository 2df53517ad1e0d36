"""Tests of the local container images (harness/images.py) and their runtime (harness/rootfs.py)."""
