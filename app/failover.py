"""Where a worker's next consumer connection starts in its broker list, and its remote-control queue.

Two things kept a worker off every broker while one node was frozen (its processes stopped, its
sockets open and silent; ``../shared/reviews/faults-3.md``):

* Celery's consumer builds a new kombu ``Connection`` from the configured failover list on every
  restart, and a new ``Connection`` starts at the list's first URL: kombu keeps its failover
  position (``Connection.cycle``) inside the connection object that is thrown away. So every
  restart dialled the frozen node first and waited the connect timeout there.
  :class:`BrokerRotation` keeps the position for the consumer instead: the next connection starts
  at the broker the last one reached, or, when that one was lost (a connection error, such as
  missed heartbeats), at the broker after it.
* The remote-control queue ``<node name>.celery.pidbox`` is exclusive to the connection that
  declared it. After a failover the old connection still owns it on the frozen node, which cannot
  release it while frozen (its peers notice only after Erlang's ``net_ticktime``, 60 s), so the
  consumer's restart on a healthy node died at once with ``RESOURCE_LOCKED``, for the whole
  freeze. :class:`ConnectionMailbox` names the queue per connection instead
  (``<node name>.<token>.celery.pidbox``): a new connection declares a queue of its own, and the
  old one goes with the old connection. Commands still reach the worker: Celery's control exchange
  is a fanout, every pidbox queue bound to it gets each command, and the worker answers those
  addressed to its node name (``celery@<pod>``), which does not change.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celery.app.control import Control as StockControl
from kombu import Queue
from kombu.pidbox import Mailbox

TOKEN_BYTES = 4
"""Random bytes in a pidbox queue's name (8 hex digits): unique per connection of one node name."""


@dataclass
class BrokerRotation:
    """The consumer's failover list, starting where its next connection should start."""

    urls: tuple[str, ...]
    start: int = 0

    @classmethod
    def of(cls, conf: Any) -> BrokerRotation:
        """The rotation over an app's consumer URLs (``broker_read_url``, else ``broker_url``: a list,
        already shuffled per process, or a ``;``-separated string)."""
        urls = conf.broker_read_url or conf.broker_url
        return cls(tuple(urls if isinstance(urls, list | tuple) else str(urls).split(";")))

    def order(self) -> list[str]:
        """The list for the next connection (a fresh list: kombu may keep and extend the one it gets)."""
        return [*self.urls[self.start :], *self.urls[: self.start]]

    def connected(self, host: str | None, port: int | None) -> None:
        """The consumer reached ``host:port``: a restart that is not a lost connection starts there."""
        index = self._index(host, port)
        if index is not None:
            self.start = index

    def lost(self, host: str | None, port: int | None) -> None:
        """The connection to ``host:port`` was lost: the next one starts at the broker after it."""
        index = self._index(host, port)
        if index is not None:
            self.start = (index + 1) % len(self.urls)

    def _index(self, host: str | None, port: int | None) -> int | None:
        for index, url in enumerate(self.urls):
            parts = urlsplit(url)
            if parts.hostname == host and (parts.port is None or parts.port == port):
                return index
        return None


class ConnectionMailbox(Mailbox):
    """kombu's mailbox with a pidbox queue named per connection (see the module docstring).

    kombu asks for the queue each time the worker starts listening, i.e. once per consumer
    connection (``Node.Consumer``); the client side (``celery inspect``/``control``) never does.
    """

    def get_queue(self, hostname: str) -> Queue:
        queue: Queue = super().get_queue(hostname)
        queue.name = f"{hostname}.{secrets.token_hex(TOKEN_BYTES)}.{self.namespace}.pidbox"
        return queue


class Control(StockControl):
    """Celery's remote control with :class:`ConnectionMailbox` (``ConfirmedCelery.control_cls``)."""

    Mailbox = ConnectionMailbox
