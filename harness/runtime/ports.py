"""TCP ports on this machine: free blocks for local nodes, and whether a listener answers."""

from __future__ import annotations

import random
import socket

PORT_STRIDE = 10
"""Ports per local node in a block (AMQP, management, Prometheus, distribution, spare)."""


def port_free(port: int) -> bool:
    """Whether ``port`` can be bound on 127.0.0.1 and on the wildcard address."""
    # Also 0.0.0.0: a wildcard listener elsewhere would make our 127.0.0.1 bind fail later.
    for addr in ("127.0.0.1", "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def find_free_base(span: int, attempts: int = 200) -> int:
    """First port of a block of ``span`` free ports, at a random place in 20000-33000."""
    # Random blocks keep concurrent harnesses (other sessions' clusters) from colliding; the
    # ranges stay below 33000 so base + 10000 (RabbitMQ's CLI port habit) is still valid.
    rng = random.SystemRandom()
    for _ in range(attempts):
        base = rng.randrange(20000, 33000 - span, PORT_STRIDE)
        if all(port_free(base + k) for k in range(span)):
            return base
    raise OSError(f"no block of {span} free TCP ports found in 20000-33000")


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts a TCP connection on ``host:port`` within ``timeout``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
