"""Cluster DNS records, computed from the Services and the live pods as CoreDNS answers them.

Pure: :mod:`harness.kube.dns_server` serves what these functions return. The rules are the
Kubernetes DNS specification's (``kubernetes/dns``, ``docs/specification.md``) over the endpoints
the EndpointSlice controller would publish (``pkg/controller/endpointslice``, ``podToEndpoint``):

* a pod is an endpoint of a Service whose selector its labels match, in the Service's namespace,
  once it has an address; it is *ready* (so answered) when it is Ready and not terminating, or
  always when the Service sets ``publishNotReadyAddresses``;
* ``<service>.<ns>.svc.<domain>``: the ready endpoints' addresses for a headless Service. A
  ClusterIP Service has no virtual IP here (no kube-proxy): its name answers the same addresses,
  a reported delta of ``spec.type``;
* ``<hostname>.<service>.<ns>.svc.<domain>``: a ready endpoint of a headless Service whose
  ``hostname`` is set and whose ``subdomain`` is that Service (a StatefulSet pod and its
  ``serviceName``).

A pod's ``/etc/resolv.conf`` is the kubelet's for ``dnsPolicy: ClusterFirst``: the cluster DNS
server, the namespace's search path and ``ndots:5``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.kube.objects import Service
from harness.kube.workloads import CLUSTER_DOMAIN, PodAddress, pod_fqdn

Records = Mapping[str, tuple[str, ...]]
"""Name (fully qualified, no trailing dot) -> its A records, sorted."""

NDOTS = 5
"""The kubelet's ``options ndots:5``: a name with fewer dots tries the search path first."""


def _endpoint(pod: PodAddress, service: Service) -> bool:
    """Is ``pod`` a ready endpoint of ``service`` (see the module docstring)?"""
    if not pod.ip or pod.namespace != service.namespace or not service.selector:
        return False
    if any(pod.labels.get(k) != v for k, v in service.selector.items()):
        return False
    return service.publish_not_ready_addresses or (pod.ready and not pod.terminating)


def service_fqdn(service: Service, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """``<service>.<ns>.svc.<domain>``."""
    return f"{service.name}.{service.namespace}.svc.{cluster_domain}"


def cluster_records(
    services: Sequence[Service], pods: Sequence[PodAddress], cluster_domain: str = CLUSTER_DOMAIN
) -> dict[str, tuple[str, ...]]:
    """Every name the cluster DNS answers now, with its addresses (names with none are absent)."""
    found: dict[str, set[str]] = {}
    for service in services:
        endpoints = [p for p in pods if _endpoint(p, service)]
        if endpoints:
            found.setdefault(service_fqdn(service, cluster_domain), set()).update(p.ip for p in endpoints)
        if not service.headless:
            continue
        for pod in endpoints:
            if pod.hostname and pod.subdomain == service.name:
                name = pod_fqdn(pod.hostname, service.name, service.namespace, cluster_domain)
                found.setdefault(name, set()).add(pod.ip)
    return {name: tuple(sorted(ips)) for name, ips in sorted(found.items())}


def hosts_text(records: Records) -> str:
    """``records`` as a hosts file (dnsmasq's ``--addn-hosts``): one ``address name`` line per record."""
    lines = ["# Cluster DNS records (harness.kube.dns), rewritten as pods come and go."]
    lines += [f"{ip}\t{name}" for name, ips in sorted(records.items()) for ip in ips]
    return "\n".join(lines) + "\n"


def search_path(namespace: str, cluster_domain: str = CLUSTER_DOMAIN) -> tuple[str, ...]:
    """The kubelet's search path for a pod of ``namespace``."""
    return (f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain)


def resolv_conf(namespace: str, nameserver: str, cluster_domain: str = CLUSTER_DOMAIN) -> str:
    """The ``/etc/resolv.conf`` the kubelet writes for a ClusterFirst pod of ``namespace``."""
    return (
        f"search {' '.join(search_path(namespace, cluster_domain))}\nnameserver {nameserver}\noptions ndots:{NDOTS}\n"
    )
