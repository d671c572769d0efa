import subprocess
import sys

import pytest

from edge_sdk.node.config import ConfigError, DeviceConfig

EXAMPLE = "deploy/raspberry-pi/device.toml"


def test_example_config_loads_and_flags_override_it():
    config = DeviceConfig.load(EXAMPLE)
    assert config.bundle == "/etc/blockfl/bundle" and config.backend == "auto"
    assert DeviceConfig.load(EXAMPLE, state="/tmp/s", miner_index=2, backend=None).state == "/tmp/s"
    assert DeviceConfig.load(None, bundle="b", identity="i", data="d", state="s").miner_index == 0


@pytest.mark.parametrize(
    "text, message",
    [
        ('bundel = "x"', "unknown setting 'bundel' (did you mean 'bundle'?)"),
        ('bundle = 3\nidentity = "i"\ndata = "d"\nstate = "s"', "'bundle' must be a str"),
        ('bundle = "b"\nidentity = "i"\ndata = "d"\nstate = "s"\nbackend = "gpu"', "'backend' must be one of"),
        ('bundle = "b"\nidentity = "i"\nstate = "s"', "missing setting(s) data"),
        ('bundle = "b" = 2', "not valid TOML"),
    ],
)
def test_bad_configs_get_clear_errors(tmp_path, text, message):
    path = tmp_path / "device.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        DeviceConfig.load(path)
    assert message in str(info.value)


def test_cli_reports_config_errors_and_exits_2(tmp_path):
    path = tmp_path / "device.toml"
    path.write_text('stat = "/x"')
    result = subprocess.run(
        [sys.executable, "-m", "edge_sdk.cli", "run", "--config", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "did you mean 'state'" in result.stderr
