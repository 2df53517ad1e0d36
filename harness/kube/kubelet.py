"""The kubelet of the local pod runner: runs one pod of the plan as Kubernetes would.

A pod here is what a kubelet makes of a pod spec: its own network namespace on its node (an
address of its own, reachable from every node unless its node is cut off), its volumes as host
directories (secrets and config maps written out, claims that outlive the pod), the kubelet's
/etc/hosts (its own names) and /etc/resolv.conf (the cluster DNS, the namespace's search path,
``ndots:5``; ``harness.kube.dns``), the init containers run to completion in order, then the container
started from its image's local root filesystem (``harness.runtime.images``) with the env, argv, user,
mounts and hostname the spec gives it. Then, as the kubelet does:

* the postStart hook runs right after the start; until it returns no probe runs, and if it fails
  the container is killed and restarted (that is Kubernetes' rule, and the reason a slow broker
  boot must not fail its hook);
* startup, readiness and liveness probes (exec, tcpSocket, httpGet) with their timings; a failed
  startup or liveness probe kills the container, readiness only flips the pod's Ready;
* a container that exits is restarted per ``restartPolicy`` with the kubelet's back-off (the
  first restart at once, then 10 s doubling up to 300 s, reset after 10 minutes of running);
* deletion runs the preStop hook, then SIGTERM, then SIGKILL when ``terminationGracePeriodSeconds``
  (counted from the start of the hook, as Kubernetes counts it) runs out.

One thread per pod (the kubelet's pod worker); everything it does is logged as an event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from harness.kube.dns import resolv_conf
from harness.kube.env import PodFacts, argv, resolve_env
from harness.kube.limits import OOM_REASON, PodLimits, Termination, host_hierarchy, termination
from harness.kube.objects import ConfigMap, Container, PodTemplate, Probe, Secret
from harness.kube.probes import ContainerProbes
from harness.kube.security import ProcessSettings, SecurityContextError, process_settings
from harness.kube.volumes import VolumeStore, container_mounts
from harness.runtime import processes, rootfs
from harness.runtime.cgroups import Group
from harness.runtime.images import Image

log = logging.getLogger(__name__)

BACKOFF_START_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 600.0
"""The kubelet's CrashLoopBackOff: 10 s doubling to 5 min, forgotten after 10 min of running."""
PROBE_FROM_NODE = {
    "tcpSocket": (
        "import socket, sys\n"
        "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4])).close()"
    ),
    "httpGet": (
        "import http.client, json, sys\n"
        "c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=float(sys.argv[4]))\n"
        "c.request('GET', sys.argv[3], headers=json.loads(sys.argv[5]))\n"
        "sys.exit(0 if 200 <= c.getresponse().status < 400 else 1)"
    ),
}
"""tcpSocket and httpGet probes, run by the host's Python inside the node's network namespace."""
MIN_TERM_GRACE_S = 2.0
"""The kubelet's minimumGracePeriodInSeconds: SIGTERM always gets this long before SIGKILL."""
TICK_S = 0.1
"""How often a pod worker looks at its container and its probes."""
MAIN_PID_TIMEOUT_S = 30.0
"""How long a started container may take to reach its chroot (mounting its root filesystem)."""


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class Event:
    at: float
    """Epoch seconds."""
    pod: str
    reason: str
    message: str


@dataclass
class PodSandbox:
    """Where a scheduled pod lives: its node, its network namespace and address, its directory."""

    node: str
    netns: str
    ip: str
    directory: Path
    node_netns: str = ""
    """The node's namespace: tcpSocket and httpGet probes come from the node, as the kubelet's do."""
    node_ip: str = ""


@dataclass
class PodContext:
    """What a pod worker needs from the rest of the cluster (the API server's view)."""

    images: Callable[[str], Image]
    """Plan image reference -> the local image that runs it."""
    secrets: Sequence[Secret]
    configmaps: Sequence[ConfigMap]
    volumes: VolumeStore
    hosts_file: Callable[[str], str]
    """Pod name -> the /etc/hosts the kubelet writes for it (its own names)."""
    nameserver: str
    """The cluster DNS server's address, for the pod's /etc/resolv.conf."""
    on_event: Callable[[Event], None]
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Env added to every container of this pod (the drills' own additions; each is a reported delta)."""
    extra_binds: Sequence[rootfs.Bind] = ()
    """Host paths mounted into every container of this pod (the drills' results directory)."""


@dataclass
class _Incarnation:
    """One run of the pod's main container."""

    runner: subprocess.Popen[bytes]
    main_pid: int
    env: dict[str, str]
    process: ProcessSettings
    """Its uid, gids and confinement: an exec'd process gets the same."""
    workdir: str
    started: float
    probes: ContainerProbes
    group: Group | None = None
    """Its memory, cpu and pids group (None where the host's cgroups are not writable)."""
    oom: bool = False
    """Its group ran out of memory (v1: seen while it waited at the limit, before the pod runner killed it)."""

    def oom_killed(self) -> bool:
        self.oom = self.oom or (self.group is not None and self.group.out_of_memory())
        return self.oom


class PodError(RuntimeError):
    """The kubelet cannot run this pod as specified (the message names the field)."""


class PodWorker:
    """Runs one pod on one node until it is deleted; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        namespace: str,
        uid: str,
        template: PodTemplate,
        sandbox: PodSandbox,
        ctx: PodContext,
        hostname: str = "",
        subdomain: str = "",
        claims: Mapping[str, Path] | None = None,
        restart_policy: str | None = None,
    ) -> None:
        spec = template.spec
        if len(spec.containers) != 1:
            raise PodError(f"{name}: spec.containers has {len(spec.containers)} entries; the runner runs exactly one")
        self.name, self.namespace, self.uid = name, namespace, uid
        self.template, self.sandbox, self.ctx = template, sandbox, ctx
        self.hostname = hostname or name
        self.subdomain = subdomain
        self.claims = dict(claims or {})
        self.restart_policy = restart_policy or spec.restart_policy
        self.container: Container = spec.containers[0]
        self.phase = Phase.PENDING
        self.ready = False
        self.restarts = 0
        self.exit_codes: list[int] = []
        self.last_termination: Termination | None = None
        """The last container's terminated state (``lastState.terminated``: reason and exit code)."""
        self.limits = PodLimits(uid, spec, host_hierarchy())
        self._incarnations = 0
        self._current: _Incarnation | None = None
        self._lock = threading.Lock()
        self._delete = threading.Event()
        self._grace: float | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pod-{name}", daemon=True)
        self._volume_paths: dict[str, Path] = {}
        self._backoff = 0.0
        self.log_file = sandbox.directory / "container.log"

    # --------------------------------------------------------------------------- public API

    def start(self) -> None:
        self._thread.start()

    @property
    def terminating(self) -> bool:
        return self._delete.is_set()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def delete(self, grace: float | None = None) -> None:
        """Ask for a graceful deletion (preStop, SIGTERM, SIGKILL after the grace period)."""
        self._grace = self.template.spec.termination_grace_period_seconds if grace is None else grace
        self._delete.set()

    def _deleting(self) -> bool:
        # A method, not the property: the flag flips from another thread between two checks.
        return self._delete.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def kill_container(self) -> None:
        """SIGKILL the running container (a crash, an OOM kill): the kubelet restarts it per restartPolicy."""
        with self._lock:
            current = self._current
        if current is None:
            raise PodError(f"{self.name}: no container is running")
        self._event("Killed", "container SIGKILLed from outside (fault injection)")
        processes.kill_group(current.runner, timeout=15)

    def signal_container(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process of the running container (SIGSTOP/SIGCONT: a frozen VM, a stalled disk)."""
        with self._lock:
            current = self._current
        if current is None:
            raise PodError(f"{self.name}: no container is running")
        self._event("Signalled", f"{sig.name} to the container from outside (fault injection)")
        processes.signal_group(current.runner.pid, sig)

    def kill_hard(self) -> None:
        """SIGKILL everything at once, no hook and no grace: the node died under the pod."""
        self._grace = 0.0
        self._delete.set()
        with self._lock:
            current = self._current
        if current is not None:
            processes.kill_group(current.runner, timeout=15)

    def exec(self, command: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """``kubectl exec``: run ``command`` in the running container (its user, env, root and namespaces)."""
        with self._lock:
            current = self._current
        if current is None or not current.main_pid:
            raise PodError(f"{self.name}: no container is running")
        return self._exec_in(current, command, timeout)

    @property
    def runner_pid(self) -> int | None:
        """The container runner's process group (recorded so a crashed harness's leftovers can be found)."""
        with self._lock:
            return None if self._current is None else self._current.runner.pid

    @property
    def cgroup(self) -> Group | None:
        """The running container's group (its memory and cpu statistics), None between runs or without cgroups."""
        with self._lock:
            return None if self._current is None else self._current.group

    @property
    def main_pid(self) -> int | None:
        with self._lock:
            return None if self._current is None else self._current.main_pid

    # ------------------------------------------------------------------------- the pod worker

    def _run(self) -> None:
        try:
            self._set_up()
            if self._run_init_containers():
                self.phase = Phase.RUNNING
                self._run_main()
        except Exception as exc:  # reported as an event and a failed phase, never silent
            log.exception("pod %s failed", self.name)
            self._event("Failed", f"{type(exc).__name__}: {exc}")
            self.phase = Phase.FAILED
        finally:
            self.ready = False
            self._tear_down()
            self._done.set()

    def _set_up(self) -> None:
        directory = self.sandbox.directory
        directory.mkdir(parents=True, exist_ok=True)
        self.limits.make_pod_group()
        if not self.limits.enforced:
            self._event("LimitsNotEnforced", "no writable cgroup hierarchy: resources.limits not applied")
        self.limits.mount_memory_volumes(self.ctx.volumes.pod_dir(self.uid) / "volumes")
        self._volume_paths = self.ctx.volumes.materialise(
            self.template.spec,
            self.uid,
            secrets=self.ctx.secrets,
            configmaps=self.ctx.configmaps,
            claims=self.claims,
        )
        # Written once, as the kubelet does: peers and Services resolve through the cluster DNS.
        (directory / "hosts").write_text(self.ctx.hosts_file(self.name))
        (directory / "resolv.conf").write_text(resolv_conf(self.namespace, self.ctx.nameserver))

    def _run_init_containers(self) -> bool:
        for index, init in enumerate(self.template.spec.init_containers):
            while not self._deleting():
                code = self._run_to_completion(init, f"initContainers[{index}] {init.name}")
                if code == 0:
                    break
                if self.restart_policy == "Never":
                    self.phase = Phase.FAILED
                    return False
                self._sleep_backoff()
            if self._deleting():
                return False
        return True

    def _run_main(self) -> None:
        while not self._deleting():
            incarnation = self._start(self.container)
            if incarnation is None:
                # postStart failed: the kubelet kills the container and restarts it like a crash.
                if self._deleting() or not self._should_restart(-signal.SIGKILL):
                    return
                self._sleep_backoff()
                self.restarts += 1
                continue
            with self._lock:
                self._current = incarnation
            code = self._supervise(incarnation)
            with self._lock:
                self._current = None
            self.ready = False
            ended = self._finish(incarnation, code)
            if code is not None:
                # The runtime's code: 128 + N for death by signal N, 137 after an OOM kill.
                code = ended.exit_code
                self.exit_codes.append(code)
            if self._deleting():
                return
            if not self._should_restart(code):
                self.phase = Phase.SUCCEEDED if code == 0 else Phase.FAILED
                return
            if time.monotonic() - incarnation.started > BACKOFF_RESET_S:
                self._backoff = 0.0
            self._sleep_backoff()
            self.restarts += 1

    def _should_restart(self, code: int | None) -> bool:
        if self.restart_policy == "Always":
            return True
        return self.restart_policy == "OnFailure" and code != 0

    def _sleep_backoff(self) -> None:
        if self._backoff:
            self._event("BackOff", f"back-off {self._backoff:.0f}s restarting failed container")
            self._delete.wait(self._backoff)
        self._backoff = min(BACKOFF_MAX_S, self._backoff * 2 if self._backoff else BACKOFF_START_S)

    # ------------------------------------------------------------------------- containers

    def _start(self, container: Container) -> _Incarnation | None:
        image = self.ctx.images(container.image)
        facts = PodFacts(
            name=self.name,
            namespace=self.namespace,
            node_name=self.sandbox.node,
            pod_ip=self.sandbox.ip,
            host_ip=self.sandbox.node_ip or self.sandbox.ip,
            uid=self.uid,
            labels=dict(self.template.labels),
            annotations=dict(self.template.annotations),
        )
        env = resolve_env(
            container, facts, secrets=self.ctx.secrets, configmaps=self.ctx.configmaps, image_env=image.env
        )
        # The runtime sets HOSTNAME; a variable of the pod's own wins over it.
        env = {"HOSTNAME": self.hostname, **env, **self.ctx.extra_env}
        command = argv(container, env, image.entrypoint, image.cmd)
        try:
            process = process_settings(
                self.template.spec.security_context,
                container.security_context,
                image_uid=image.uid,
                image_gid=image.gid,
            )
        except SecurityContextError as exc:
            raise PodError(f"{self.name}: container {container.name}: {exc}") from exc
        workdir = container.working_dir or image.workdir
        binds = [
            *image.binds,
            *self._mounts(container),
            rootfs.Bind(self.sandbox.directory / "hosts", "/etc/hosts", read_only=False),
            rootfs.Bind(self.sandbox.directory / "resolv.conf", "/etc/resolv.conf", read_only=False),
            *self.ctx.extra_binds,
        ]
        runner_argv = rootfs.container_argv(
            image.rootfs,
            hostname=self.hostname,
            argv=command,
            netns=self.sandbox.netns,
            uid=process.uid,
            gid=process.gid,
            groups=process.groups,
            env=env,
            binds=binds,
            workdir=workdir,
            confinement=process.confinement,
        )
        self._incarnations += 1
        group = self.limits.container_group(container, self._incarnations)
        if group is not None:
            runner_argv = group.enter_argv(runner_argv)
        with self.log_file.open("ab") as out:
            runner = subprocess.Popen(
                runner_argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        main_pid = self._wait_main_pid(runner)
        if main_pid is None and runner.poll() is None:
            processes.kill_group(runner)
            self.limits.drop_container_group(group)
            raise PodError(f"{self.name}: container {container.name} did not start; see {self.log_file}")
        # A container that already exited (a quick init container) has no process to exec into.
        main_pid = main_pid or 0
        self._event("Started", f"container {container.name} ({image.name} image) pid {main_pid}: {command[0]}")
        started = time.monotonic()
        incarnation = _Incarnation(
            runner, main_pid, env, process, workdir, started, ContainerProbes.for_container(container, started), group
        )
        hook = container.post_start
        if hook is not None and main_pid and not self._post_start(incarnation, hook):
            if self._deleting():
                # Deleted while the hook ran: the pod still gets its preStop and grace period.
                with self._lock:
                    self._current = incarnation
                self._terminate(incarnation)
                return None
            processes.kill_group(runner)
            self.exit_codes.append(self._finish(incarnation, -signal.SIGKILL).exit_code)
            return None
        # Probes count from when the container runs, i.e. after the hook returned.
        incarnation.probes = ContainerProbes.for_container(container, time.monotonic())
        return incarnation

    def _mounts(self, container: Container) -> list[rootfs.Bind]:
        return [
            rootfs.Bind(m.host_path, m.container_path, m.read_only)
            for m in container_mounts(container, self.template.spec, self._volume_paths)
        ]

    def _wait_main_pid(self, runner: subprocess.Popen[bytes]) -> int | None:
        deadline = time.monotonic() + MAIN_PID_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = rootfs.container_main_pid(runner.pid)
            if pid is not None:
                return pid
            if runner.poll() is not None:
                return None
            time.sleep(0.02)
        return None

    def _run_to_completion(self, container: Container, what: str) -> int:
        incarnation = self._start(container)
        if incarnation is None:
            return -1
        with self._lock:
            self._current = incarnation
        try:
            while (code := incarnation.runner.poll()) is None:
                if self._deleting():
                    code = self._terminate(incarnation)
                    break
                time.sleep(TICK_S)
        finally:
            with self._lock:
                self._current = None
        ended = self._finish(incarnation, code)
        self._event("Completed" if code == 0 else "Error", f"{what} exited with {ended.exit_code} ({ended.reason})")
        return -1 if code is None else code

    def _post_start(self, incarnation: _Incarnation, command: Sequence[str]) -> bool:
        # The hook has no timeout of its own in Kubernetes: it runs until it returns or the
        # container dies; a deletion meanwhile still gets its grace period.
        self._event("PostStartHook", f"running {list(command)}")
        done = self._exec_in(incarnation, command, timeout=None, stop=self._delete)
        if done.returncode == 0:
            self._event("PostStartHook", "succeeded")
            return True
        self._event("FailedPostStartHook", f"exit {done.returncode}: {done.stdout[-500:]}{done.stderr[-500:]}")
        return False

    def _supervise(self, incarnation: _Incarnation) -> int | None:
        """Watch the container until it exits, a probe kills it or the pod is deleted; its exit code."""
        while True:
            code = incarnation.runner.poll()
            if code is not None:
                self._event("Exited", f"container exited with {code}")
                return code
            if self._deleting():
                return self._terminate(incarnation)
            # The pod group too: pages an earlier run left (its tmpfs writes) may fill it before the container's.
            if incarnation.oom_killed() or self.limits.pod_out_of_memory():
                incarnation.oom = True
                return self._oom_kill(incarnation)
            self._probe(incarnation)
            if incarnation.probes.must_restart:
                self._event("Unhealthy", "startup/liveness probe failed: killing the container")
                return self._stop(incarnation, self.template.spec.termination_grace_period_seconds, run_pre_stop=True)
            time.sleep(TICK_S)

    def _oom_kill(self, incarnation: _Incarnation) -> int | None:
        """The container's group recorded an OOM kill: the whole container dies, as on GKE.

        cgroup v2 nodes (GKE's) with kubelet >= 1.28 set ``memory.oom.group``: the kernel kills
        every process of the container, not only the largest. On v1 the group's kernel kills are
        off (harness.runtime.cgroups): its processes wait at the limit and the pod runner kills
        them all, so no process of it (a Celery main process rejecting a task) runs on after the OOM.
        """
        self._event("Killing", f"container {self.container.name} is out of memory: killing all of it")
        processes.kill_group(incarnation.runner, timeout=15)
        return incarnation.runner.poll()

    def _finish(self, incarnation: _Incarnation, code: int | None) -> Termination:
        """Record how a container run ended (its lastState) and drop its group."""
        ended = termination(code, incarnation.oom_killed())
        if incarnation.group is not None:
            peak = incarnation.group.peak_memory_bytes()
            self._event(
                ended.reason if ended.reason == OOM_REASON else "Terminated",
                f"reason {ended.reason}, exit code {ended.exit_code}, memory peak "
                f"{'?' if peak is None else f'{peak / 2**20:.0f}Mi'}",
            )
        self.last_termination = ended
        self.limits.drop_container_group(incarnation.group)
        return ended

    def _probe(self, incarnation: _Incarnation) -> None:
        now = time.monotonic()
        for worker in incarnation.probes.active():
            if worker.next_due() > now:
                continue
            ran_at = time.monotonic()
            ok = self._run_probe(incarnation, worker.probe)
            flipped = worker.record(ok, ran_at)
            if flipped is not None:
                self._event("Probe", f"{worker.kind.value} probe now {'passing' if flipped else 'failing'}")
        ready = incarnation.probes.ready
        if ready != self.ready:
            self.ready = ready
            self._event("Ready" if ready else "NotReady", "pod is ready" if ready else "pod is not ready")

    def _run_probe(self, incarnation: _Incarnation, probe: Probe) -> bool:
        timeout = float(probe.timeout_seconds)
        if probe.kind == "exec":
            return self._exec_in(incarnation, probe.command, timeout).returncode == 0
        # From the pod's node, as the kubelet probes: a node cut off from the others still reaches its pods.
        code = PROBE_FROM_NODE[probe.kind]
        headers = json.dumps(dict(probe.headers))
        argv = [sys.executable, "-c", code, self.sandbox.ip, str(probe.port), probe.path, repr(timeout), headers]
        if self.sandbox.node_netns:
            argv = ["ip", "netns", "exec", self.sandbox.node_netns, *argv]
        try:
            return subprocess.run(argv, capture_output=True, timeout=timeout + 5, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _terminate(self, incarnation: _Incarnation) -> int | None:
        grace = self._grace if self._grace is not None else self.template.spec.termination_grace_period_seconds
        return self._stop(incarnation, grace, run_pre_stop=grace > 0)

    def _stop(self, incarnation: _Incarnation, grace: float, *, run_pre_stop: bool) -> int | None:
        deadline = time.monotonic() + grace
        self.ready = False
        if run_pre_stop and self.container.pre_stop is not None:
            self._event("PreStopHook", f"running {list(self.container.pre_stop)} (grace {grace:.0f}s)")
            done = self._exec_in(incarnation, self.container.pre_stop, timeout=max(0.0, deadline - time.monotonic()))
            self._event("PreStopHook", f"exit {done.returncode} after {grace - (deadline - time.monotonic()):.1f}s")
        # The kubelet grants at least 2 s after SIGTERM, even when preStop used up the grace period.
        left = max(MIN_TERM_GRACE_S, deadline - time.monotonic()) if grace > 0 else 0.0
        self._event("Killing", f"SIGTERM, {left:.0f}s of grace left")
        rootfs.stop_container(incarnation.runner.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return incarnation.runner.wait(timeout=left)
        self._event("Killing", "grace period over: SIGKILL")
        processes.kill_group(incarnation.runner, timeout=15)
        return incarnation.runner.poll()

    def _exec_in(
        self,
        incarnation: _Incarnation,
        command: Sequence[str],
        timeout: float | None,
        stop: threading.Event | None = None,
    ) -> subprocess.CompletedProcess[str]:
        exec_argv = rootfs.exec_argv(
            incarnation.main_pid,
            list(command),
            uid=incarnation.process.uid,
            gid=incarnation.process.gid,
            groups=incarnation.process.groups,
            env=incarnation.env,
            workdir=incarnation.workdir,
            confinement=incarnation.process.confinement,
        )
        if incarnation.group is not None:
            # runc exec joins the container's cgroups: what an exec (a probe) uses counts against its limits.
            exec_argv = incarnation.group.enter_argv(exec_argv)
        proc = subprocess.Popen(
            exec_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                out, err = proc.communicate(timeout=0.2)
                return subprocess.CompletedProcess(exec_argv, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                expired = deadline is not None and time.monotonic() > deadline
                if expired or (stop is not None and stop.is_set()) or incarnation.runner.poll() is not None:
                    processes.signal_group(proc.pid, signal.SIGKILL)
                    out, err = proc.communicate()
                    return subprocess.CompletedProcess(exec_argv, -signal.SIGKILL, out, err)

    def _tear_down(self) -> None:
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            processes.kill_group(current.runner, timeout=15)
            self.limits.drop_container_group(current.group)
        left = self.limits.release()
        if left:
            self._event("LimitsLeftover", f"could not remove {left}")

    def _event(self, reason: str, message: str) -> None:
        self.ctx.on_event(Event(time.time(), self.name, reason, message))


__all__ = ["Event", "Phase", "PodContext", "PodError", "PodSandbox", "PodWorker"]
