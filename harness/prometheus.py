"""A real Prometheus beside the local cluster: Debian's ``prometheus`` package, on loopback only.

It scrapes the pods of the plan the pod runner booted, by their pod addresses (198.18.0.0/15),
as a Prometheus in the cluster would find them through its Kubernetes service discovery: each
scrape job names a workload and a container port *by name* (the way GMP's ``PodMonitoring`` and
the operator's ``PodMonitor`` select them), and a follower thread rewrites the job's file-based
service discovery whenever pods come, go or change address. Every pod with an address is a
target, Ready or not: a broker whose container is down must read ``up == 0``, not vanish.

Its data directory, config, rule file and log are in the caller's work directory; it runs in a
process group of its own, recorded like the pods' (``harness.runtime.processes.GroupRecord``), so a
crashed run's Prometheus is killed by the next run's ``harness.runtime.cleanup.cleanup_stale``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from harness.kube.cluster import KubeCluster
from harness.kube.objects import resolve_port
from harness.runtime import processes
from harness.runtime.poll import poll
from harness.runtime.ports import find_free_base

PROMETHEUS_BIN: Final = "prometheus"
CONFIG_NAME: Final = "ha-celery-prometheus.yml"
"""Also the marker ``harness.runtime.cleanup`` recognises a stale Prometheus group by."""
READY_TIMEOUT_S: Final = 60.0
FOLLOW_S: Final = 0.25
"""How often the follower looks at the pods (a restarted worker pod has a new address)."""


class PrometheusError(RuntimeError):
    """Prometheus could not be started or answered with an error; the message says which."""


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: the pods of ``owner`` (``StatefulSet/rabbitmq``), their container port ``port`` by
    name, ``path`` and URL ``params``."""

    name: str
    owner: str
    port: str
    path: str = "/metrics"
    params: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    address: str
    """``ip:port``."""
    labels: Mapping[str, str]


def pod_targets(cluster: KubeCluster, job: ScrapeJob) -> list[Target]:
    """The job's targets now: every pod of its workload that has an address, with GMP's labels
    (``instance`` = ``pod:port-name``, ``pod``, ``namespace``)."""
    found: list[Target] = []
    for pod in cluster.pods_of(job.owner):
        ip = pod.ip
        if ip is None:
            continue
        [container] = pod.template.spec.containers
        port = resolve_port(job.port, container.ports, job.owner, "ports")
        labels = {"instance": f"{pod.name}:{job.port}", "pod": pod.name, "namespace": pod.namespace}
        found.append(Target(f"{ip}:{port}", labels))
    return found


def prometheus_installed() -> bool:
    return shutil.which(PROMETHEUS_BIN) is not None


class LocalPrometheus:
    """See the module docstring. Use as a context manager; :meth:`follow` keeps the targets current."""

    def __init__(
        self,
        workdir: Path,
        jobs: Sequence[ScrapeJob],
        rule_groups: list[dict[str, Any]],
        *,
        scrape_interval_s: float,
        evaluation_interval_s: float,
    ) -> None:
        self.workdir = workdir
        self.jobs = tuple(jobs)
        self.rule_groups = rule_groups
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._record = processes.GroupRecord(f"prometheus-{os.getpid()}-{uuid.uuid4().hex[:6]}", workdir)
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._written: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    # ------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        binary = shutil.which(PROMETHEUS_BIN)
        if binary is None:
            raise PrometheusError("prometheus is not installed: `make system-deps` (apt-get install prometheus)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for job in self.jobs:
            self._write_targets(job.name, [])
        (self.workdir / "rules.yml").write_text(yaml.safe_dump({"groups": self.rule_groups}, sort_keys=False))
        (self.workdir / CONFIG_NAME).write_text(yaml.safe_dump(self._config(), sort_keys=False))
        self.port = find_free_base(1)
        argv = [
            binary,
            f"--config.file={self.workdir / CONFIG_NAME}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                argv, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._record.write([self._proc.pid])
        try:
            poll(self._ready, READY_TIMEOUT_S, "prometheus to be ready", interval=0.2, check=self._alive)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the follower and Prometheus (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=10)
            self._follower = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            processes.terminate_groups([proc], timeout=10)
        self._record.remove()

    def follow(self, targets: Callable[[ScrapeJob], list[Target]]) -> None:
        """Rewrite every job's targets from ``targets(job)`` now and then every ``FOLLOW_S`` until :meth:`stop`."""
        for job in self.jobs:
            self._write_targets(job.name, targets(job))

        def loop() -> None:
            while not self._stop.wait(FOLLOW_S):
                for job in self.jobs:
                    try:
                        self._write_targets(job.name, targets(job))
                    except Exception:  # a pod mid-change; the next round sees it settled
                        logging.getLogger(__name__).debug("targets of %s", job.name, exc_info=True)

        self._follower = threading.Thread(target=loop, name="prometheus-targets", daemon=True)
        self._follower.start()

    # ------------------------------------------------------------------------------- queries

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data``; PrometheusError if it is not a success."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        return list(self.api("query", query=expr)["result"])

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query: ``[{"metric": {...}, "values": [[t, "v"], ...]}, ...]``."""
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return list(data["result"])

    def version(self) -> str:
        """The running server's version (``/api/v1/status/buildinfo``)."""
        return str(self.api("status/buildinfo")["version"])

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts now (``/api/v1/alerts``)."""
        return list(self.api("alerts")["alerts"])

    def targets_up(self) -> dict[str, tuple[int, int]]:
        """Per job: (targets whose last scrape succeeded, targets)."""
        counts: dict[str, tuple[int, int]] = {}
        for target in self.api("targets", state="active")["activeTargets"]:
            job = target["labels"]["job"]
            up, total = counts.get(job, (0, 0))
            counts[job] = (up + (target["health"] == "up"), total + 1)
        return counts

    # ------------------------------------------------------------------------------- internals

    def _config(self) -> dict[str, Any]:
        interval = f"{round(self.scrape_interval_s * 1000)}ms"
        jobs: list[dict[str, Any]] = []
        for job in self.jobs:
            scrape: dict[str, Any] = {
                "job_name": job.name,
                "metrics_path": job.path,
                "file_sd_configs": [{"files": [str(self._targets_file(job.name))]}],
            }
            if job.params:
                scrape["params"] = {k: list(v) for k, v in job.params.items()}
            jobs.append(scrape)
        return {
            "global": {
                "scrape_interval": interval,
                # A scrape may take the whole interval: a broker slow under the drill's load is not down.
                "scrape_timeout": interval,
                "evaluation_interval": f"{round(self.evaluation_interval_s * 1000)}ms",
            },
            "rule_files": [str(self.workdir / "rules.yml")],
            "scrape_configs": jobs,
        }

    def _targets_file(self, job: str) -> Path:
        return self.workdir / f"targets-{job}.json"

    def _write_targets(self, job: str, targets: list[Target]) -> None:
        text = json.dumps([{"targets": [t.address], "labels": dict(t.labels)} for t in targets], sort_keys=True)
        if self._written.get(job) == text:
            return
        path = self._targets_file(job)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: Prometheus never reads half a file
        self._written[job] = text

    def _ready(self) -> bool:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
        return False

    def _alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise PrometheusError(f"prometheus exited:\n{processes.tail(self.log)}")
