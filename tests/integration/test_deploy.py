"""Deployment files: systemd units verify, certificates chain to the CA, the production broker
config serves TLS with registry credentials, the Pi installer refuses 32-bit/x86 systems."""

import os
import shutil
import ssl
import stat
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from conftest import REPO
from testbed import production_config

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
        results = {}
        for label, password in (("right", None), ("wrong", "nope")):
            config = coordinator_broker(tmp_path / "task", "mqtts://localhost")
            user, real = config.username, config.password
            done = threading.Event()
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{label}", protocol=mqtt.MQTTv5)
            client.tls_set(ca_certs=str(pki / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
            client.username_pw_set(user, password or real)
            client.on_connect = lambda c, u, f, rc, p, label=label, done=done: (
                results.__setitem__(label, rc.is_failure),
                done.set(),
            )
            for _ in range(50):
                try:
                    client.connect("localhost", port)
                    break
                except OSError:
                    time.sleep(0.1)
            client.loop_start()
            done.wait(10)
            client.loop_stop()
            client.disconnect()
        assert results == {"right": False, "wrong": True}
        plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plaintext", protocol=mqtt.MQTTv5)
        # no plaintext MQTT on the TLS listener: connect() only sends CONNECT (paho swallows write errors),
        # the broker drops the connection, so the client never becomes connected and the assert fails
        with pytest.raises(AssertionError):
            plain.connect("localhost", port)
            plain.loop_start()
            time.sleep(1)
            assert plain.is_connected()
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
