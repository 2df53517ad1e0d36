"""A container's environment and command line, resolved as the kubelet resolves them.

Order and visibility follow kubelet's makeEnvironmentVariables: service-link variables first,
then envFrom, then env in order; ``$(VAR)`` in a value sees only what is defined before it (plus
the service variables); the image's own ENV is merged last by the runtime, under the container's,
and is never visible to ``$(VAR)`` expansion.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.kube.objects import ConfigMap, Container, EnvVar, KeyRef, Secret, Service


class EnvError(ValueError):
    """The kubelet would fail the container with CreateContainerConfigError."""


@dataclass(frozen=True)
class PodFacts:
    """What a fieldRef can read about a pod."""

    name: str
    namespace: str
    node_name: str = ""
    pod_ip: str = ""
    host_ip: str = ""
    uid: str = ""
    service_account: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes a ``$``; unknown or unclosed references stay literal."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = text.find(")", i + 2)
            if close < 0:
                # An unclosed reference is copied as is, then scanning resumes after "$(".
                out.append("$(")
                i += 2
                continue
            name = text[i + 2 : close]
            out.append(env.get(name, f"$({name})"))
            i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_value(path: str, pod: PodFacts) -> str:
    """The value of a downward-API ``fieldRef.fieldPath``; a missing label reads as empty, as in Kubernetes."""
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node_name,
        "spec.serviceAccountName": pod.service_account,
        "status.podIP": pod.pod_ip,
        "status.podIPs": pod.pod_ip,
        "status.hostIP": pod.host_ip,
        "status.hostIPs": pod.host_ip,
    }
    if path in simple:
        return simple[path]
    m = _LABEL_REF.match(path)
    if m is None:
        raise EnvError(f"unsupported fieldRef {path!r}")
    source = pod.labels if m.group(1) == "labels" else pod.annotations
    return source.get(m.group(2), "")


def _key_ref(ref: KeyRef, kind: str, store: Mapping[str, Mapping[str, bytes]]) -> str | None:
    values = store.get(ref.name)
    if values is None or ref.key not in values:
        if ref.optional:
            return None
        what = f"{kind} {ref.name!r}" if values is None else f"key {ref.key!r} in {kind} {ref.name!r}"
        raise EnvError(f"{what} not found")
    return values[ref.key].decode()


class _SecretValues(dict[str, bytes]):
    """A Secret's values that refuse to hand out a masked one."""

    def __init__(self, secret: Secret) -> None:
        super().__init__(secret.data)
        self.secret = secret

    def __getitem__(self, key: str) -> bytes:
        if key in self.secret.masked:
            # A masked value reaching a process would be a silently wrong password: refuse it.
            raise EnvError(f"secret {self.secret.name!r} key {key!r} is still masked: run fill_secrets first")
        return super().__getitem__(key)

    def items(self) -> Any:
        return [(k, self[k]) for k in self]


def _secret_store(secrets: Sequence[Secret]) -> dict[str, Mapping[str, bytes]]:
    return {s.name: _SecretValues(s) for s in secrets}


def _cm_store(configmaps: Sequence[ConfigMap]) -> dict[str, Mapping[str, bytes]]:
    return {c.name: {**c.binary, **{k: v.encode() for k, v in c.data.items()}} for c in configmaps}


def _one(
    var: EnvVar,
    env: Mapping[str, str],
    pod: PodFacts,
    secrets: Mapping[str, Mapping[str, bytes]],
    cms: Mapping[str, Mapping[str, bytes]],
) -> str | None:
    if var.value is not None:
        return expand(var.value, env)
    if var.field_ref is not None:
        return field_value(var.field_ref, pod)
    if var.secret_ref is not None:
        return _key_ref(var.secret_ref, "secret", secrets)
    if var.config_map_ref is not None:
        return _key_ref(var.config_map_ref, "configmap", cms)
    return ""


def resolve_env(
    container: Container,
    pod: PodFacts,
    *,
    secrets: Sequence[Secret] = (),
    configmaps: Sequence[ConfigMap] = (),
    image_env: Mapping[str, str] | None = None,
    service_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The process environment of ``container``: image ENV overlaid by service links, envFrom and env."""
    sec = _secret_store(secrets)
    cms = _cm_store(configmaps)
    env: dict[str, str] = dict(service_env or {})
    for ef in container.env_from:
        if ef.config_map is not None:
            src, kind, store = ef.config_map, "configmap", cms
        else:
            src, kind, store = str(ef.secret), "secret", sec
        values = store.get(src)
        if values is None:
            if ef.optional:
                continue
            raise EnvError(f"{kind} {src!r} not found (envFrom)")
        env.update({ef.prefix + k: v.decode() for k, v in values.items()})
    for var in container.env:
        value = _one(var, env, pod, sec, cms)
        if value is not None:
            env[var.name] = value
    # The runtime merges the image's ENV under the container's: container wins, no expansion.
    return {**(image_env or {}), **env}


def expand_command(container: Container, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """``command`` and ``args`` with ``$(VAR)`` expanded against the container's (Kubernetes) env."""
    return [expand(c, env) for c in container.command], [expand(a, env) for a in container.args]


def argv(
    container: Container, env: Mapping[str, str], image_entrypoint: Sequence[str] = (), image_cmd: Sequence[str] = ()
) -> list[str]:
    """The process's argv as the runtime builds it from command/args and the image's ENTRYPOINT/CMD.

    ``command`` replaces ENTRYPOINT and (when set) drops CMD; ``args`` replaces CMD.
    """
    command, args = expand_command(container, env)
    if command:
        return command + args
    return list(image_entrypoint) + (args if container.args else list(image_cmd))


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def service_link_env(services: Sequence[Service], cluster_ips: Mapping[str, str], namespace: str) -> dict[str, str]:
    """Docker-link style variables the kubelet injects for every ClusterIP Service of the namespace.

    ``cluster_ips`` maps a Service name to the virtual IP the runner gives it; headless Services
    and Services without an IP get none, as in Kubernetes (enableServiceLinks defaults to true).
    """
    env: dict[str, str] = {}
    for svc in services:
        ip = cluster_ips.get(svc.name)
        if svc.namespace != namespace or svc.headless or not ip or not svc.ports:
            continue
        n = _env_name(svc.name)
        env[f"{n}_SERVICE_HOST"] = ip
        env[f"{n}_SERVICE_PORT"] = str(svc.ports[0].port)
        for p in svc.ports:
            if p.name:
                env[f"{n}_SERVICE_PORT_{_env_name(p.name)}"] = str(p.port)
        first = svc.ports[0]
        env[f"{n}_PORT"] = f"{first.protocol.lower()}://{ip}:{first.port}"
        for p in svc.ports:
            prefix = f"{n}_PORT_{p.port}_{p.protocol.upper()}"
            env[prefix] = f"{p.protocol.lower()}://{ip}:{p.port}"
            env[prefix + "_PROTO"] = p.protocol.lower()
            env[prefix + "_PORT"] = str(p.port)
            env[prefix + "_ADDR"] = ip
    return env
