"""Config files: `--config=configs/NAME.py[:variant]` plus `--config.a.b=value` overrides.

Config files are ml_collections files whose `get_config(variant)` returns a `ConfigDict`. The
command line is parsed by ml_collections' own `config_flags`, which rejects an override whose key
does not exist. `load_config` gives scripts and tests the same behaviour without absl flags.
"""

import difflib
import importlib.util
import inspect
import logging
import pathlib
import sys
from typing import Callable, Sequence

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from pstroke.errors import UserError, exit_on_user_error


# Config file used by `run_cli` for a config flag that the command line leaves out, by flag name.
_DEFAULT_CONFIG_FILES: dict[str, str] = {}

# absl's help flags. In absl-py 2.5.1 they print the help and exit with status 1 while the flags are parsed.
_HELP_FLAGS = ("help", "?", "helpshort", "helpfull", "helpxml")


def define_config_flag(name: str = "config", default: str | None = None,
                       help_string: str = "Config file, e.g. configs/shapes_tiny.py:variant."
                       ) -> config_flags.config_flags._ConfigFlag:
    """Define the `--config` absl flag (with `--config.a.b=value` overrides) and return its holder.

    `default` (a `path.py[:variant]` spec) is used when the command line has no `--<name>`. It is
    loaded by `run_cli` while the flags are parsed, not at import, so a bad override of it is
    reported as a one-line error like any other.
    """
    if default is not None:
        _DEFAULT_CONFIG_FILES[name] = default
        help_string = f"{help_string} Default: {default}."
    return config_flags.DEFINE_config_file(name, None, help_string)


def run_cli(main: Callable[[Sequence[str]], None]) -> None:
    """Run an absl `main` whose flags include a config flag, with clean errors for bad overrides.

    ml_collections reports an unknown override key (`--config.train.stepz=5`) with a traceback; this
    prints one line that names the key and exits with 2. A `UserError` raised by `main` is reported
    the same way. `--help` and the other help flags exit with 0. jax's INFO line for each backend it
    cannot find is left out of the log.
    """
    quiet_missing_backend_log()
    app.run(exit_on_user_error(main), flags_parser=_parse_flags)


class _MissingBackendFilter(logging.Filter):
    """Logging filter that drops jax's INFO record "Unable to initialize backend 'tpu': ..." for a missing backend."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage().startswith("Unable to initialize backend"))


_MISSING_BACKEND_FILTER = _MissingBackendFilter()


def quiet_missing_backend_log() -> None:
    """Leave jax's INFO line about each missing backend (such as 'tpu' on a CPU machine) out of the log.

    Warnings stay: jax 0.10.2 warns on its own when the hardware of a missing backend seems present
    (`_suggest_missing_backends` in jax/_src/xla_bridge.py). Calling this again adds nothing.
    """
    logging.getLogger("jax._src.xla_bridge").addFilter(_MISSING_BACKEND_FILTER)


def _parse_flags(argv: Sequence[str]) -> Sequence[str]:
    """Parse absl flags; print one line naming the bad flag or config key and exit 2 on failure."""
    argv = _with_default_config_files(argv)
    _check_config_variants(argv)
    try:
        remaining = flags.FLAGS(argv)
    except SystemExit as exit_request:
        if exit_request.code == 1 and _requests_help(argv):
            sys.exit(0)  # the user asked for the help, so printing it is success
        raise
    except flags.Error as error:
        message = str(error)
        if "Traceback" in message:  # ml_collections embeds the config file's traceback in the message
            message = _config_file_error(argv, message)
        _exit_with(_describe_unknown_override(argv) or message)
    except SyntaxError as error:
        _exit_with(f"config file {error.filename!r} is not a Python config file (line {error.lineno}: {error.msg}); "
                   "pass a file such as configs/shapes_tiny.py")
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        _exit_with(_describe_unknown_override(argv) or f"invalid config override: {error}")

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


def _requests_help(argv: Sequence[str]) -> bool:
    """Return whether `argv` contains one of absl's help flags, such as `--help` or `-?`."""
    for argument in argv[1:]:
        if argument == "--":
            return False  # absl leaves the arguments after "--" unparsed
        name = argument.lstrip("-").partition("=")[0]
        if argument.startswith("-") and name in _HELP_FLAGS:
            return True
    return False


def _config_file_error(argv: Sequence[str], message: str) -> str:
    """Return one line for an error raised while loading a config file: the flag as typed, then the
    exception's own message without its class name."""
    name = message.removeprefix("flag --").split("=", 1)[0]
    spec = _config_spec(argv, name)
    last = message.strip().splitlines()[-1]
    kind, separator, text = last.partition(": ")
    if not separator or not kind.isidentifier():
        text = last
    return f"--{name}={spec}: {text}" if spec is not None else text


def _check_config_variants(argv: Sequence[str]) -> None:
    """Exit with one line for a config flag given as `path.py:` with nothing after the colon.

    This runs before ml_collections, which would pass "" to `get_config` as the variant.
    """
    for name in flags.FLAGS:
        if not config_flags.config_flags.is_config_flag(flags.FLAGS[name]):
            continue
        spec = _config_spec(argv, name)
        if spec is None or not spec.endswith(":"):
            continue
        path = spec.partition(":")[0]
        try:
            module = _load_config_module(path)
        except (UserError, OSError, ImportError, SyntaxError):
            continue  # the flag parser reports a config file that fails to load
        _exit_with(f"--{name}={spec}: {_empty_variant_message(path, module)}")


def _with_default_config_files(argv: Sequence[str]) -> list[str]:
    """Return `argv` with `--<name>=<default>` added for each defaulted config flag it leaves out."""
    argv = list(argv)
    for name, default in _DEFAULT_CONFIG_FILES.items():
        if _config_spec(argv, name) is None:
            argv.insert(1, f"--{name}={default}")
    return argv


def _config_spec(argv: Sequence[str], name: str) -> str | None:
    """Return the last value given to `--<name>` in `argv` (`--name=SPEC` or `--name SPEC`), or None."""
    spec = None
    for index, argument in enumerate(argv[1:], start=1):
        flag, equals, value = argument.lstrip("-").partition("=")
        if not argument.startswith("-") or flag != name:
            continue
        if equals:
            spec = value
        elif index + 1 < len(argv):
            spec = argv[index + 1]
    return spec


def _describe_unknown_override(argv: Sequence[str]) -> str | None:
    """Return a message for the first `--<config flag>.a.b` override in `argv` whose key the config
    file lacks, or None if every key exists. The message quotes the flag as typed and suggests the
    closest valid flag.
    """
    for index, argument in enumerate(argv[1:], start=1):
        name, dot, rest = argument.lstrip("-").partition(".")
        if not argument.startswith("-") or not dot or name not in flags.FLAGS:
            continue
        if not config_flags.config_flags.is_config_flag(flags.FLAGS[name]):
            continue
        spec = _config_spec(argv, name)
        if spec is None:
            return None
        try:
            config = load_config(spec)
        except (UserError, OSError, ImportError, SyntaxError):
            return None  # the config file itself fails to load, and the flag parser's error reports the cause

        key, equals, _ = rest.partition("=")
        typed = argument
        if not equals and index + 1 < len(argv) and not argv[index + 1].startswith("-"):
            typed = f"{argument} {argv[index + 1]}"  # the `--config.a.b VALUE` form
        problem = unknown_key_message(config, key, flag_prefix=f"--{name}.", typed=typed)
        if problem is not None:
            return f"invalid flag {typed!r}: {problem}"
    return None


def unknown_key_message(config: ml_collections.ConfigDict, key: str, flag_prefix: str = "",
                        typed: str | None = None) -> str | None:
    """Return why the dotted `key` is not a field of `config` with the closest valid key, or None if it is one.

    With `flag_prefix` (such as "--config.") the suggestion is written as a flag, and with `typed`
    (the flag as the user wrote it) it keeps the typed value.
    """
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts):
        walked = ".".join(parts[:depth])
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            return f"config key {walked!r} is a value, not a section, so it has no key {part!r}"
        if part in node:
            node = node[part]
            continue

        fields = sorted(str(field) for field in node.keys())
        where = f"under {walked!r}" if walked else "at the top level"
        matches = difflib.get_close_matches(part, fields, n=1)
        if not matches:
            return f"config has no key {key!r}; valid keys {where}: {', '.join(fields)}"
        suggestion = ".".join(parts[:depth] + matches + parts[depth + 1:])
        if not flag_prefix:
            return f"config has no key {key!r}; did you mean {suggestion!r}?"
        corrected = f"{flag_prefix}{suggestion}"
        if typed is not None:
            corrected += typed[typed.index(key) + len(key):]
        return f"config has no key {key!r}; did you mean {corrected}?"
    return None


def _exit_with(message: str) -> None:
    message = message.replace("\\n", " ").replace("\\'", "'").replace("''", "'")
    message = " ".join(message.split())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Load `path.py[:variant]` and apply `a.b=value` overrides.

    Raises:
      UserError: the file is missing, the variant after a ':' is empty, or an override names a key
        the config does not have.
    """
    path, colon, variant = spec.partition(":")
    module = _load_config_module(path)
    if colon and not variant:
        raise UserError(f"invalid config {spec!r}: {_empty_variant_message(path, module)}")
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


def _load_config_module(path: str):
    """Import the config file `path` as a module.

    Raises:
      UserError: the file does not exist.
    """
    file = pathlib.Path(path)
    if not file.is_file():
        raise UserError(f"config file not found: {path!r}; pass an existing file such as configs/shapes_tiny.py")
    module_spec = importlib.util.spec_from_file_location(f"pstroke_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _empty_variant_message(path: str, module) -> str:
    """Return the error for `path:`, naming the file's variants where they are known."""
    empty = "the config variant after ':' is empty"
    parameters = list(inspect.signature(module.get_config).parameters.values())
    default = parameters[0].default if parameters else inspect.Parameter.empty
    if default in ("", inspect.Parameter.empty):
        return f"{empty}, and {path} has no variants; drop the colon"
    variants = _known_variants(module)
    choices = " or ".join(f"{path}:{name}" for name in variants) if variants else f"{path}:VARIANT"
    return f"{empty}; pass {choices}, or drop the colon for the default variant {default!r}"


def _known_variants(module) -> tuple[str, ...]:
    """Return the variants that a config file's `get_config` accepts, or () when they are unknown.

    They are the file's `VARIANTS`, or those of `pstroke.shapes_config` for a file built on it.
    """
    from pstroke import shapes_config

    variants = getattr(module, "VARIANTS", None)
    if variants is None and getattr(module, "shapes_config", None) is shapes_config.shapes_config:
        variants = shapes_config.VARIANTS
    return tuple(variants or ())


def _set_by_path(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Set `config.<key>` from its text form, parsed to the type of the current value."""
    problem = unknown_key_message(config, key)
    if problem is not None:
        raise UserError(f"invalid override {key}={text}: {problem}")
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
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
