"""Command-line overrides checked against the configuration they override, before a job reads anything.

Hydra refuses an unknown key (struct mode) but takes any value: ``trainer.max_epochs=abc`` composes, and the
run fails much later, deep inside Lightning. :func:`check_overrides` compares every value override with the
setting it replaces, in the configuration composed with the same config-group choices (``model=cam``,
``experiment=...``) and no value overrides, and raises :class:`~rca_lightning.utils.errors.InvalidSetting`
naming the first wrong one::

    trainer.max_epochs: expected an integer or null (default 30), got 'abc'

What a setting accepts:

* the type of the argument it feeds, when its node has a ``_target_`` whose signature annotates it (and the
  annotation accepts the default, so it is what the config means): ``trainer.devices`` takes an integer, a
  string or a list, ``trainer.limit_train_batches`` an integer, a number or null; a class that collects its
  keyword arguments into a dataclass names it ``settings_type`` (``RCALitModule``), whose fields annotate
  them (and are all it takes);
* else the type of its default: an integer takes an integer (not ``true``, not ``1.5``); a number takes an
  integer or a number; ``true``/``false`` only a boolean; a string takes a string or a number (Hydra reads
  ``2012`` as a number); a list a list; a mapping a mapping; a null, ``???`` or an interpolation that does not
  resolve here takes anything, and so does a null given by the user (the value that turns a setting off).

No setting takes a non-finite number (``nan``, ``inf``, also inside a list or mapping). A value the user gives
as an interpolation (``trainer.max_epochs=${seed}``) is judged by what it resolves to.
A key added with ``+`` / ``++`` under a ``_target_`` node must be an argument of that target
(``+trainer.foo=1``: ``lightning.Trainer`` has no argument ``foo``). ``hydra.*`` keys are left to Hydra's own
schema. :class:`SettingsCheck`, registered in ``conf/hydra/default.yaml``, runs the check at the start of
every job of every console script; ``rca-pipeline`` also checks each stage's ``stages.<stage>`` list.

Only Hydra's public compose API is used: a value is read, as Hydra parsed it, from the configuration composed
with the overrides; an override's key and prefix are read by Hydra's documented override grammar.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import math
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import PurePath
from types import NoneType, UnionType
from typing import Any, NamedTuple

from hydra import compose
from hydra.experimental.callback import Callback
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from rca_lightning.utils.errors import InvalidSetting, UserErrorExit

# Stands for "no type to compare with": a ``???`` default, an interpolation that does not resolve.
_ANYTHING = object()
# How settings are read here: a missing or unresolvable one is :data:`_ANYTHING`, not an error.
_LENIENT = {"throw_on_missing": False, "throw_on_resolution_failure": False}
_SEQUENCES = (
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
# How an argument of a class type is given in a config.
_BUILT = "a mapping with _target_"
# The prefixes of an override in Hydra's documented grammar (hydra.cc/docs/advanced/override_grammar/basic):
# add or change, add, delete.
_PREFIXES = ("++", "+", "~")


class _Override(NamedTuple):
    """One override as Hydra's grammar writes it: ``[prefix]key[@package][=value]``."""

    line: str
    prefix: str  # "", "~", "+" or "++"
    key: str  # a dotted setting, or a config group (``/`` between its parts)
    package: bool  # ``@package`` given: only a config group takes one
    value: str | None  # as written; None after a bare ``~key``


def _parse(line: str) -> _Override:
    head, equals, value = line.strip().partition("=")  # a key holds no "=", a value may
    prefix = next((p for p in _PREFIXES if head.startswith(p)), "")
    key, at, _ = head.removeprefix(prefix).partition("@")
    return _Override(line, prefix, key.strip(), bool(at), value if equals else None)


def check_overrides(
    config_name: str,
    overrides: Sequence[str],
    checked: Sequence[str] | None = None,
    composed: DictConfig | None = None,
    source: str = "",
) -> None:
    """Raise :class:`InvalidSetting` for the first override whose value does not fit the setting it changes.

    Needs an initialised Hydra (inside a job, or ``initialize_config_dir``): it composes ``config_name``.

    Args:
        config_name: the primary config (``train``, ``seg_train``, ...).
        overrides: every override the config is composed with; their config-group choices make the
            reference configuration.
        checked: the overrides to check (default: every one of ``overrides``).
        composed: ``config_name`` already composed with ``overrides`` and its ``hydra`` node (a job's
            config); composed here when not given, which also refuses unknown keys and groups.
        source: where the overrides come from, put before the message (``stages.segmentation``).
    """
    if checked is not None and not checked:
        return
    if composed is None:
        composed = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    groups = set(composed.hydra.runtime.choices)

    def is_choice(override: _Override) -> bool:
        # A group Hydra records a choice of, a package (seg_data@data=voc) or a nested group (hydra/launcher)
        # only go with a group. A list of choices (callbacks=[default,attention_accumulation]) is not in
        # runtime.choices: the configs it names are merged into a mapping, where a list value stays a list.
        if override.key in groups or override.package or "/" in override.key:
            return True
        listed = (override.value or "").lstrip().startswith("[")
        return listed and not isinstance(OmegaConf.select(composed, override.key, **_LENIENT), ListConfig)

    parsed = [_parse(line) for line in overrides]
    reference = compose(config_name, overrides=[o.line for o in parsed if is_choice(o)])
    for override in parsed if checked is None else map(_parse, checked):
        if not is_choice(override):
            try:
                _check_one(override, reference, composed)
            except InvalidSetting as error:
                if not source:
                    raise
                raise InvalidSetting(f"{source}: {error}") from None


def _check_one(override: _Override, reference: DictConfig, composed: DictConfig) -> None:
    """Raise :class:`InvalidSetting` when ``override`` (a value override) does not fit ``reference``.

    The value is the one ``composed`` holds (Hydra parsed it: ``7`` an integer, ``'7'`` a string); a value
    the user gives as an interpolation is judged by what it resolves to, not at all when it does not resolve.
    """
    key = override.key
    if override.prefix == "~" or key.startswith("hydra."):
        return  # a deletion, or a key Hydra's schema types itself
    value = _plain(OmegaConf.select(composed, key, default=_ANYTHING, **_LENIENT))
    if value is _ANYTHING:
        return
    if _holds_non_finite(value):
        raise InvalidSetting(f"{key}: expected finite numbers (no nan or inf), got {_short(value)}")
    parent_key, _, name = key.rpartition(".")
    target_name, target = _target_of(composed, parent_key)
    added = override.prefix in ("+", "++") and not _exists(reference, parent_key, name)
    if added and target is not None and not name.startswith("_") and not _takes(target, name):
        raise InvalidSetting(f"{key}: {target_name} has no argument {name!r} (given as +{key})")
    default = _plain(OmegaConf.select(reference, key, default=_ANYTHING, **_LENIENT))
    annotation = _annotation(target, name) if target is not None else _ANYTHING
    if annotation is not _ANYTHING and (default is _ANYTHING or _accepts(annotation, default)):
        if _accepts(annotation, value):
            return
        expected = _describe(annotation)
    elif value is None or default is None or default is _ANYTHING or _fits_default(default, value):
        return
    else:
        expected = _describe(type(default))
    given = "" if default is _ANYTHING else f" (default {_short(default)})"
    raise InvalidSetting(f"{key}: expected {expected}{given}, got {_short(value)}")


def _plain(value: Any) -> Any:
    """``value`` as plain Python (containers resolved), :data:`_ANYTHING` when something in it does not
    resolve."""
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001 - an interpolation inside that does not resolve here
            return _ANYTHING
    return value


def _holds_non_finite(value: Any) -> bool:
    """Whether ``value`` (plain Python) is or holds a ``nan`` or an infinity, which no setting takes."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(map(_holds_non_finite, value))
    if isinstance(value, dict):
        return any(map(_holds_non_finite, value.values()))
    return False


def _exists(config: DictConfig, parent_key: str, name: str) -> bool:
    parent = OmegaConf.select(config, parent_key, **_LENIENT) if parent_key else config
    if isinstance(parent, DictConfig):
        return name in parent or OmegaConf.is_missing(parent, name)
    return isinstance(parent, ListConfig) and name.isdigit() and int(name) < len(parent)


def _target_of(config: DictConfig, node_key: str) -> tuple[str, Callable | None]:
    """The ``_target_`` of the node at ``node_key`` and what it names; None when it has none or it does not
    import."""
    node = OmegaConf.select(config, node_key, **_LENIENT) if node_key else config
    target = OmegaConf.select(node, "_target_", **_LENIENT) if isinstance(node, DictConfig) else None
    if not isinstance(target, str):
        return "", None
    try:
        found = get_object(target)
    except Exception:  # noqa: BLE001 - instantiation reports an unknown target in its own words
        return target, None
    return target, found if callable(found) else None


def _parameters(target: Callable) -> dict[str, inspect.Parameter] | None:
    try:
        return dict(inspect.signature(target).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return None


def _settings_type(target: Callable) -> type | None:
    """The dataclass a class collects its ``**settings`` into (its ``settings_type``), if it names one."""
    settings_type = getattr(target, "settings_type", None)
    is_dataclass = isinstance(settings_type, type) and dataclasses.is_dataclass(settings_type)
    return settings_type if is_dataclass else None


def _takes(target: Callable, name: str) -> bool:
    """Whether ``target`` takes a keyword argument ``name`` (anything, when its signature is unknown)."""
    parameters = _parameters(target)
    if parameters is None or name in parameters:
        return True
    settings_type = _settings_type(target)
    if settings_type is not None:
        return name in {field.name for field in dataclasses.fields(settings_type)}
    return any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _annotation(target: Callable, name: str) -> Any:
    """The type annotation of ``target``'s argument ``name``; :data:`_ANYTHING` when there is none to use."""
    function = target.__init__ if inspect.isclass(target) else target
    settings_type = _settings_type(target)
    try:
        hints = typing.get_type_hints(function)
        if name not in hints and settings_type is not None:
            hints = typing.get_type_hints(settings_type)
    except Exception:  # noqa: BLE001 - a name only imported for type checkers, a syntax of a newer Python
        return _ANYTHING
    return hints.get(name, _ANYTHING)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fits_default(default: Any, value: Any) -> bool:
    """Whether ``value`` has the type of ``default`` (a plain, non-null value)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return _is_number(value)
    if isinstance(default, str):
        return isinstance(value, str) or _is_number(value)
    if isinstance(default, list):
        return isinstance(value, list)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return True


def _accepts(annotation: Any, value: Any, numbers_as_text: bool = True) -> bool:
    """Whether a setting of value ``value`` (plain Python, as Hydra parses it) fits ``annotation``.

    A string takes a number too (Hydra reads ``2012`` as one), unless ``numbers_as_text`` is False.
    A class the value cannot be (a Lightning ``Accelerator``, an ``nn.Module``) takes a mapping: a
    ``_target_`` config builds it. What this cannot judge (``Any``, a type variable, a callable) takes
    anything.
    """
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is None or annotation is NoneType:
        return value is None
    if origin in (typing.Union, UnionType):
        # A number where the argument also takes numbers is judged as one: devices=1.5 is no device name.
        as_text = numbers_as_text and not any(argument in (int, float) for argument in arguments)
        return any(_accepts(argument, value, as_text) for argument in arguments)
    if origin is typing.Literal:
        return any(type(value) is type(choice) and value == choice for choice in arguments)
    if origin is not None and origin in _SEQUENCES:
        if not isinstance(value, list):
            return False
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            return len(value) == len(arguments) and all(map(_accepts, arguments, value))
        return not arguments or all(_accepts(arguments[0], item) for item in value)
    if origin is not None and origin in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        return len(arguments) != 2 or all(_accepts(arguments[1], item) for item in value.values())
    if origin is not None or not isinstance(annotation, type) or annotation is object:
        return True  # Callable[...], type[...], Any, a TypeVar, a string left unresolved
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return _is_number(value)
    if annotation is str or issubclass(annotation, (PurePath, os.PathLike)):
        return isinstance(value, str) or (numbers_as_text and _is_number(value))
    if annotation in _SEQUENCES:
        return isinstance(value, list)
    if annotation in _MAPPINGS:
        return isinstance(value, dict)
    return isinstance(value, dict)


def _describe(annotation: Any) -> str:
    """``annotation`` in words: "an integer or null", "a list, a string or an integer".

    A class a setting can only be through a ``_target_`` mapping (``lr: float | Tensor``) is left out of the
    words unless nothing else is left.
    """
    words: list[str] = []
    for word in _words(annotation):
        if word not in words:
            words.append(word)
    if len(words) > 1 and _BUILT in words:
        words.remove(_BUILT)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _words(annotation: Any) -> list[str]:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is None or annotation is NoneType:
        return ["null"]
    if origin in (typing.Union, UnionType):
        return [word for argument in arguments for word in _words(argument)]
    if origin is typing.Literal:
        return [repr(choice) for choice in arguments]
    if origin in _SEQUENCES and arguments and arguments[-1] is not Ellipsis and origin is not tuple:
        return [f"a list (items: {_describe(arguments[0])})"]
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        return ["a list"]
    if origin in _MAPPINGS or annotation in _MAPPINGS:
        return ["a mapping"]
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if annotation in names:
        return [names[annotation]]
    if isinstance(annotation, type) and issubclass(annotation, (PurePath, os.PathLike)):
        return ["a path"]
    return [_BUILT]


def _short(value: Any, limit: int = 60) -> str:
    """``value`` as the message shows it: ``null``, ``true``, ``'abc'``, ``[1, 2]``, cut at ``limit``."""
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class SettingsCheck(Callback):
    """Hydra callback: :func:`check_overrides` on the job's command-line overrides, before the job runs.

    Hydra turns an exception a callback raises into a warning and runs the job anyway; a wrong override
    leaves as :class:`UserErrorExit` instead, which Hydra lets pass, and the console script prints it in one
    line (:mod:`rca_lightning.cli.console`). Any other failure of the check stays Hydra's warning.
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_overrides(config.hydra.job.config_name, list(config.hydra.overrides.task), composed=config)
        except InvalidSetting as error:
            raise UserErrorExit(error) from error


__all__ = ["SettingsCheck", "check_overrides"]
