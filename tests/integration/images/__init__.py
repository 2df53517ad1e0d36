"""Tests of the local container images (harness/runtime/images.py) and their runtime (harness/runtime/rootfs.py)."""
