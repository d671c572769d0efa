"""Deployment files: systemd units verify, certificates chain to the CA, the production broker
config serves TLS with registry credentials, the Pi installer refuses 32-bit/x86 systems."""

import os
import shutil
import socket
import stat
import subprocess
import sys
import time

from conftest import REPO
from testbed import connack, production_config

UNITS = [
    "deploy/raspberry-pi/blockfl-device.service",
    "deploy/server/blockfl-miner@.service",
    "deploy/server/blockfl-coordinator-publish.service",
    "deploy/server/blockfl-coordinator-publish.path",
]


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian: apt-get install -y systemd)"
    names = []
    for unit in UNITS:
        text = (REPO / unit).read_text().replace("/opt/blockfl/bin/", str(REPO / ".venv" / "bin") + "/")
        name = os.path.basename(unit).replace("@.service", "@m0.service")
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    result = subprocess.run([analyze, "verify", *names], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "blockfl" in line]
    assert problems == [], problems


def test_make_certs_issues_a_ca_broker_and_device_certificates(tmp_path):
    out = tmp_path / "pki"
    subprocess.run(
        ["bash", str(REPO / "deploy/server/make-certs.sh"), str(out), "broker.test", "dev1"],
        check=True,
        capture_output=True,
    )
    check = subprocess.run(
        ["openssl", "verify", "-CAfile", str(out / "ca.crt"), str(out / "broker.crt"), str(out / "devices/dev1.crt")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    text = subprocess.run(
        ["openssl", "x509", "-in", str(out / "broker.crt"), "-noout", "-text"], capture_output=True, text=True
    ).stdout
    assert "DNS:broker.test" in text
    for key in ("ca.key", "broker.key", "devices/dev1.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600


# an MQTT 5 CONNECT in plaintext: clean start, keep-alive 60, no properties, client id "x"; a plaintext
# listener answers it with CONNACK 0x87 (20 03 00 87 00: no credentials), a TLS listener with nothing
PLAIN_CONNECT = bytes([0x10, 14]) + b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + b"\x00\x01x"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_the_production_broker_config_serves_tls_with_registry_credentials(tmp_path):
    from coordinator.task import broker
    from coordinator.task.setup import coordinator_broker, init_task
    from edge_sdk.protocol.identity import Identity

    pki = tmp_path / "pki"
    subprocess.run(
        ["bash", str(REPO / "deploy/server/make-certs.sh"), str(pki), "localhost"], check=True, capture_output=True
    )
    init_task(tmp_path / "task", miners=[Identity.generate().public], initial_hashes=20_000)
    port = broker.free_port()
    broker_files, log = tmp_path / "task" / "broker", tmp_path / "mosquitto.log"
    (tmp_path / "prod.conf").write_text(production_config(port, pki, broker_files, tmp_path, log))
    process = subprocess.Popen([broker.find_mosquitto(), "-c", str(tmp_path / "prod.conf")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            assert process.poll() is None and time.monotonic() < deadline, "the production broker did not start"
            time.sleep(0.1)
        config = coordinator_broker(tmp_path / "task", "mqtts://localhost")
        tls = dict(host="localhost", ca_file=pki / "ca.crt")
        assert connack(port, config.username, config.password, **tls) == 0
        assert connack(port, config.username, "nope", **tls) == 0x87  # not authorized
        # no plaintext MQTT on the TLS listener: a plain CONNECT gets no CONNACK, the connection is
        # closed, and the broker logs why
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(PLAIN_CONNECT)
            try:
                answer = plain.recv(64)
            except ConnectionResetError:
                answer = b""
        assert answer == b"", f"the TLS listener answered a plaintext CONNECT with {answer.hex()}"
        deadline = time.monotonic() + 5
        while "wrong version number" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-500:]
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_pi_installer_refuses_a_system_that_is_not_aarch64(tmp_path):
    result = subprocess.run(
        ["bash", str(REPO / "deploy/raspberry-pi/install.sh"), "--prefix", str(tmp_path / "v"), "--no-system"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 1 and "64-bit" in result.stderr and not (tmp_path / "v").exists()
