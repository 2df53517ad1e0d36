"""Issue 28's environment and CLI cases: every bad value refused at start, naming the variable."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app import health
from app.config import ConfigError, check_files, from_env
from app.metrics import MetricsConfigError, WorkerMetrics
from contract import metrics, wire

LOGIN = {wire.ENV_BROKER_USER: "u", wire.ENV_BROKER_PASSWORD: "p"}
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({wire.ENV_BROKER_URLS: "amqp://u:p@rmq-0:0/"}, "BROKER_URLS entry 'amqp://u:***@rmq-0:0/'"),
        ({wire.ENV_BROKER_URLS: "amqp://u:p@rmq-0:65536/"}, "BROKER_URLS entry"),
        ({wire.ENV_BROKER_URLS: "amqp://u:p@rmq-0:\u00b2/"}, "BROKER_URLS entry"),
        ({wire.ENV_BROKER_URLS: "amqp://u:p@rmq-0:\u0663/"}, "BROKER_URLS entry"),
        ({wire.ENV_BROKER_HOSTS: "rmq-0:\u00b2", **LOGIN}, "BROKER_HOSTS entry 'rmq-0:\u00b2' has an invalid port"),
        ({wire.ENV_BROKER_HOSTS: "rmq-0:0", **LOGIN}, "BROKER_HOSTS entry 'rmq-0:0' has an invalid port"),
        ({wire.ENV_BROKER_HOSTS: "rmq-0", wire.ENV_BROKER_PORT: "\u0663", **LOGIN}, "BROKER_PORT='\u0663' is not"),
        ({wire.ENV_BROKER_HOSTS: "rmq-0", wire.ENV_BROKER_PORT: "+3", **LOGIN}, "BROKER_PORT='+3' is not"),
        ({wire.ENV_BROKER_HOSTS: "rmq-0", wire.ENV_BROKER_PORT: "0", **LOGIN}, "BROKER_PORT='0' is out of range"),
        ({wire.ENV_BROKER_HOSTS: "rmq-0", metrics.ENV_METRICS_PORT: "1_000", **LOGIN}, "WORKER_METRICS_PORT='1_000'"),
    ],
)
def test_ports_are_1_to_65535_in_ascii_digits(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as error:
        from_env(env)
    assert str(error.value).startswith(named), str(error.value)
    assert "65535" in str(error.value)


def _tls_config(ca: Path) -> dict[str, str]:
    return {wire.ENV_BROKER_HOSTS: "rmq-0", wire.ENV_BROKER_TLS_CA_FILE: str(ca), **LOGIN}


def test_a_missing_or_non_certificate_ca_file_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^BROKER_TLS_CA_FILE='.*/nope\.crt' cannot be read \(No such file"):
        check_files(from_env(_tls_config(tmp_path / "nope.crt")))
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"^BROKER_TLS_CA_FILE='.*/key\.pem' holds no PEM certificate"):
        check_files(from_env(_tls_config(tmp_path / "key.pem")))
    with pytest.raises(ConfigError, match="cannot be read"):
        check_files(from_env(_tls_config(tmp_path)))  # a directory


def test_a_ca_certificate_passes(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder(issuer_name=name, subject_name=name, public_key=key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    config = from_env(_tls_config(tmp_path / "ca.crt"))
    assert check_files(config) is config


def test_the_metrics_directory_must_be_a_writable_directory(tmp_path: Path) -> None:
    base = {wire.ENV_BROKER_HOSTS: "rmq-0", **LOGIN}
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "file", tmp_path / "file" / "below", Path("/proc/ha-celery-metrics")):
        with pytest.raises(ConfigError, match=rf"^PROMETHEUS_MULTIPROC_DIR='{bad}' is not a writable directory"):
            check_files(from_env({**base, metrics.ENV_MULTIPROC_DIR: str(bad)}))
    assert check_files(from_env({**base, metrics.ENV_MULTIPROC_DIR: str(tmp_path)})).metrics_dir is not None
    created = tmp_path / "not-yet" / "metrics"  # the pod's emptyDir has no such directory until the worker starts
    assert check_files(from_env({**base, metrics.ENV_MULTIPROC_DIR: str(created)})).metrics_dir is not None
    assert created.is_dir()


def test_a_busy_metrics_port_is_named(tmp_path: Path) -> None:
    from app.factory import make_app

    config = from_env({wire.ENV_BROKER_HOSTS: "rmq-0", **LOGIN})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        exporter = WorkerMetrics(make_app(config), tmp_path / "heartbeat", None)
        with pytest.raises(MetricsConfigError, match=rf"^WORKER_METRICS_PORT={port}: cannot serve /metrics"):
            exporter.serve(port, addr="127.0.0.1")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "x", "1e999"])
def test_health_max_age_is_finite_and_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        health.main([f"--max-age={value}"], environ={})
    assert exit_.value.code == 2
    assert "--max-age: finite seconds > 0 (e.g. 90), got" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "0k", "-1", "\u0663", "1.5", "", "1000M"])
def test_bench_scale_is_a_positive_count(value: str) -> None:
    from bench.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--scale", value])
    assert exit_.value.code == 2


def test_bench_and_drill_refuse_an_incomplete_plan(tmp_path: Path) -> None:
    (tmp_path / "kubernetes").mkdir()
    (tmp_path / "kubernetes" / "x.yaml").write_text("kind: X\n")
    for module in ("bench", "drill"):
        args = ["--plan", str(tmp_path)] if module == "bench" else ["run", "--plan", str(tmp_path)]
        done = subprocess.run(
            [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode != 0, module
        assert f"{tmp_path}: not a complete plan (missing resources.json, engine.json, settings.json)" in done.stderr
        assert "Traceback" not in done.stderr, done.stderr
