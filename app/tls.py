"""AMQP over TLS with a failover list: each broker URL's certificate is checked against its own host.

kombu's documented way to verify the host of a failover list is ``ssl={"server_hostname": None}``
("use the hostname from the URL"), but kombu 5.7's pyamqp transport fills that in by *writing*
the current host into the dict it was given (``establish_connection``), which is Celery's one
``broker_use_ssl`` dict, shared by every connection of the process. After the first connection
the name is no longer None, so a worker that fails over to the next node checks that node's
certificate against the first node's name and is refused: with per-node certificates a broker
kill would leave it unable to reconnect anywhere until its first node came back.

:class:`PerHostTlsConnection` keeps kombu's meaning without the shared write: whenever the
connection takes a URL (at creation, on every failover switch, as a clone or a pooled connection) it gets its
own copy of the options with that URL's host as ``server_hostname``. An explicit name (not None)
is left alone.
"""

from __future__ import annotations

from typing import Any

from celery.app.amqp import AMQP
from kombu import Connection
from kombu.connection import ConnectionPool, PooledConnection


class _HostOptions(dict[str, Any]):
    """TLS options pinned to one host, remembering the options they were made from (with None)."""

    def __init__(self, template: dict[str, Any], host: str) -> None:
        super().__init__({**template, "server_hostname": host})
        self.template = template


class _PerHost(Connection):
    """Pins ``server_hostname`` to the current host whenever the connection takes a URL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pin_server_hostname()

    def switch(self, conn_str: str) -> None:
        super().switch(conn_str)
        self._pin_server_hostname()

    def _pin_server_hostname(self) -> None:
        # A clone or pooled connection is created from this connection's pinned options: start
        # from what they were made from, or it would keep the first host's name through failovers.
        options = self.ssl.template if isinstance(self.ssl, _HostOptions) else self.ssl
        host = self.hostname
        if isinstance(options, dict) and "server_hostname" in options and options["server_hostname"] is None and host:
            # A copy: the dict given (Celery's broker_use_ssl) keeps None for the next URL.
            self.ssl = _HostOptions(options, host)


class PerHostPooledConnection(_PerHost, PooledConnection):
    """What the connection pool hands out (``.delay()`` publishes on these)."""


class PerHostConnectionPool(ConnectionPool):
    def new(self) -> PerHostPooledConnection:
        # kombu's own ConnectionPool.new, with the pinning class.
        return PerHostPooledConnection(self, **dict(self.connection._info(resolve=False)))


class PerHostTlsConnection(_PerHost):
    """A kombu Connection whose TLS ``server_hostname`` follows the URL it currently uses; so do its
    clones and the connections of its pool (Celery's ``app.pool``)."""

    def Pool(self, limit: int | None = None, **kwargs: Any) -> PerHostConnectionPool:
        return PerHostConnectionPool(self, limit=limit, **kwargs)


class TlsAwareAMQP(AMQP):
    """Celery's AMQP helper with :class:`PerHostTlsConnection` for every connection the app opens."""

    Connection = PerHostTlsConnection
