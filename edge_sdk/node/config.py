"""The device's settings: a TOML file, command-line flags over it, checked with clear errors."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from edge_sdk.training.backends import BACKENDS


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DeviceConfig:
    bundle: str  # enrolment bundle directory
    identity: str  # identity directory (blockfl-device keys init)
    data: str  # local data: .npz with x and y
    state: str  # state directory
    backend: str = "auto"
    miner_index: int = 0
    verify: str = "full"  # "full": check every update of every block; "light": headers, models and alerts
    verbose: bool = False

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> DeviceConfig:
        """Values from the file, then from `overrides` that are not None."""
        values: dict = {}
        if path is not None:
            try:
                values = tomllib.loads(Path(path).read_text())
            except OSError as exc:
                raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        names = {f.name: f for f in fields(cls)}
        for key in values:
            if key not in names:
                hint = difflib.get_close_matches(key, names, n=1)
                raise ConfigError(
                    f"{path}: unknown setting {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                )
        values.update({k: v for k, v in overrides.items() if v is not None})
        missing = [n for n, f in names.items() if f.default is MISSING and n not in values]
        if missing:
            raise ConfigError(
                f"missing setting(s) {', '.join(missing)}: "
                f"set them in the config file or with --{missing[0].replace('_', '-')}"
            )
        for name, value in values.items():
            kind = {"str": str, "int": int, "bool": bool}[names[name].type]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"setting {name!r} must be a {kind.__name__}, got {value!r}")
        config = cls(**values)
        if config.backend not in BACKENDS:
            raise ConfigError(f"setting 'backend' must be one of {', '.join(BACKENDS)}, got {config.backend!r}")
        if config.verify not in ("full", "light"):
            raise ConfigError(f"setting 'verify' must be 'full' or 'light', got {config.verify!r}")
        if config.miner_index < 0:
            raise ConfigError("setting 'miner_index' must be >= 0")
        return config
