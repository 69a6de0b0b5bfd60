"""Config files: `--config=configs/NAME.py[:variant]` plus `--config.a.b=value` overrides.

Config files are ml_collections files whose `get_config(variant)` returns a `ConfigDict`. The
command line is parsed by ml_collections' own `config_flags`, which rejects an override whose key
does not exist. `load_config` gives scripts and tests the same behaviour without absl flags.
"""

import importlib.util
import pathlib
import sys
from typing import Callable, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from pstroke.errors import UserError, exit_on_user_error


def define_config_flag(name: str = "config") -> config_flags.config_flags._ConfigFlag:
    """Define the `--config` absl flag (with `--config.a.b=value` overrides) and return its holder."""
    return config_flags.DEFINE_config_file(name, None, "Config file, e.g. configs/shapes_tiny.py:variant.")


def run_cli(main: Callable[[Sequence[str]], None]) -> None:
    """Run an absl `main` whose flags include a config flag, with clean errors for bad overrides.

    ml_collections reports an unknown override key (`--config.train.stepz=5`) with a traceback; this
    prints one line that names the key and exits with 2. A `UserError` raised by `main` is reported
    the same way.
    """
    app.run(exit_on_user_error(main), flags_parser=_parse_flags)


def _parse_flags(argv: Sequence[str]) -> Sequence[str]:
    """Parse absl flags; print one line naming the bad flag or config key and exit 2 on failure."""
    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        message = str(error)
        if "Traceback" in message:  # ml_collections embeds the config file's traceback in the message
            message = f"{message.split(':', 1)[0]}: {message.strip().splitlines()[-1]}"
        _exit_with(message)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        _exit_with(f"invalid config override: {error}")

    for name in flags.FLAGS:
        flag = flags.FLAGS[name]
        if not config_flags.config_flags.is_config_flag(flag):
            continue
        try:
            value = flag.value
            if value is not None:
                value.keys()  # config files load lazily; touch it so a bad path fails here
        except ValueError as error:
            _exit_with(str(error))
        except OSError:
            _exit_with(f"config file not found: --{name}={config_flags.get_config_filename(flag)!r}; "
                       "pass an existing file such as configs/shapes_tiny.py")
        if value is None:
            _exit_with(f"missing --{name}: pass a config file such as --{name}=configs/shapes_tiny.py")
    return remaining


def _exit_with(message: str) -> None:
    message = message.replace("\\n", " ").replace("\\'", "'").replace("''", "'")
    message = " ".join(message.split())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Load `path.py[:variant]` and apply `a.b=value` overrides.

    Raises:
      UserError: the file is missing, or an override names a key the config does not have.
    """
    path, _, variant = spec.partition(":")
    file = pathlib.Path(path)
    if not file.is_file():
        raise UserError(f"config file not found: {path!r}; pass an existing file such as configs/shapes_tiny.py")
    module_spec = importlib.util.spec_from_file_location(f"pstroke_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except ValueError as error:
        raise UserError(f"{error} (config {spec!r})") from None

    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep:
            raise UserError(f"invalid override {override!r}: expected KEY=VALUE, e.g. train.steps=100")
        _set_by_path(config, key, text)
    return config


def _set_by_path(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Set `config.<key>` from its text form, parsed to the type of the current value."""
    *parents, leaf = key.split(".")
    node = config
    walked = []
    for part in parents:
        walked.append(part)
        if part not in node:
            raise UserError(f"unknown config key {'.'.join(walked)!r} in override {key!r}")
        node = node[part]
    if leaf not in node:
        known = ", ".join(sorted(node.keys()))
        raise UserError(f"unknown config key {key!r}; keys at this level: {known}")
    current = node[leaf]
    node[leaf] = _parse_like(current, text, key)


def _parse_like(current, text: str, key: str):
    """Parse `text` into the type of `current` (bool, int, float, str, tuple)."""
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, (tuple, list)):
            items = [item.strip() for item in text.strip("()[] ").split(",") if item.strip()]
            kind = type(current[0]) if current else str
            return type(current)(kind(item) for item in items)
    except ValueError:
        raise UserError(f"invalid value {text!r} for config key {key!r}: expected {type(current).__name__}") from None
    return text
