"""nftables inside a network namespace: load a ruleset, read a set (Debian's ``nftables`` package).

Each call is ``ip netns exec <ns> nft ...``: the rules live in that namespace only, so a pod's
filter never touches the host's or another pod's. A script passed to :func:`apply` is one ``nft -f``
transaction: it replaces what it names atomically or changes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess

NFT = "nft"
_TIMEOUT_S = 15.0


class NftError(RuntimeError):
    """An nft command failed; the message carries the namespace, the command and its stderr."""


def available() -> bool:
    """Whether the ``nft`` binary is installed (``make system-deps`` installs it)."""
    return shutil.which(NFT) is not None


def _run(netns: str, *args: str, stdin: str | None = None) -> str:
    argv = ["ip", "netns", "exec", netns, NFT, *args]
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise NftError(f"{netns}: `{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def apply(netns: str, script: str) -> None:
    """Load ``script`` (``nft -f`` syntax) in ``netns`` as one transaction."""
    _run(netns, "-f", "-", stdin=script)


def set_elements(netns: str, table: str, name: str, family: str = "inet") -> list[tuple[str, ...]]:
    """The elements of set ``name`` of ``table`` in ``netns``; a concatenation's parts as a tuple.

    An absent table or set reads as empty (the pod has no such direction isolated)."""
    try:
        out = _run(netns, "-j", "list", "set", family, table, name)
    except NftError:
        return []
    found: list[tuple[str, ...]] = []
    for item in json.loads(out).get("nftables", []):
        for elem in (item.get("set") or {}).get("elem", []):
            value = elem.get("elem", {}).get("val", elem) if isinstance(elem, dict) else elem
            parts = value.get("concat", [value]) if isinstance(value, dict) else [value]
            found.append(tuple(str(p) for p in parts))
    return found
