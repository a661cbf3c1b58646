# The networks of deep kernels in model files: a registry of the network classes that may be
# written (by name, with JSON constructor arguments) and rebuilt, never code from a file.
"""Feature extractors (``fg.kernels.Warped``'s networks) in model files; re-exported by
``flashgp.serialize``."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import kernels as K
from .serialize import ConfigError, _check_declared, _is_int


@dataclass(frozen=True)
class FeatureExtractorEntry:
    """How one network class is written and rebuilt: ``factory(**args)`` builds it from the JSON
    arguments ``args(network)`` gives (its weights come back with the state dict); ``numel(args)``,
    if given, the size of its largest tensor (checked against ``declared_size_limit``)."""

    cls: type
    factory: Callable
    args: Callable
    numel: Callable | None = None


def _mlp_numel(args: dict) -> int:
    widths = [args.get("in_dims"), *(args.get("hidden") or []), args.get("out_dims")]
    if not all(_is_int(w) and w > 0 for w in widths):
        return 0  # the constructor names the bad argument
    return max(a * b for a, b in zip(widths[:-1], widths[1:]))


# The network registry: a file names its Warped kernel's network by one of these keys. Only
# registered classes are written (matched exactly) and rebuilt; no code comes from files.
FEATURE_EXTRACTORS: dict[str, FeatureExtractorEntry] = {
    "MLP": FeatureExtractorEntry(K.MLP, K.MLP, lambda m: m.config_args(), _mlp_numel),
}


def register_feature_extractor(name: str, factory: Callable, args: Callable | None = None,
                               cls: type | None = None) -> None:
    """Make a network class savable as the ``feature_extractor`` of ``fg.kernels.Warped``.

    Args:
        name: the key files use for it (not "MLP", the built-in one).
        factory: ``factory(**kwargs)`` -> the network, its weights at any value (they are loaded
            from the file afterwards); usually the class itself.
        args: network -> the JSON-ready kwargs (str, numbers, bools, None, lists, dicts) that
            rebuild it with ``factory``. Default: the network's ``config_args()`` method.
        cls: the class written under ``name`` (matched exactly; default ``factory`` if it is a
            class).

    Register it in the program that saves and in the one that loads (before ``fg.load``): files
    hold only the name and the kwargs, never code.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected a non-empty string, got {name!r}")
    if name == "MLP" or (name in FEATURE_EXTRACTORS and FEATURE_EXTRACTORS[name].factory is not factory):
        raise ValueError(f"name: the feature extractor name {name!r} is taken")
    if not callable(factory):
        raise TypeError(f"factory: expected a callable (the network class), got {type(factory).__name__}")
    cls = factory if cls is None else cls
    if not isinstance(cls, type) or not issubclass(cls, torch.nn.Module):
        raise TypeError("cls: expected the nn.Module subclass written under this name (pass cls=... when factory "
                        "is not the class itself)")
    if args is None:
        def args(module):
            method = getattr(module, "config_args", None)
            if not callable(method):
                raise TypeError(f"feature_extractor: {type(module).__qualname__} has no config_args() method; "
                                f"pass args=... to register_feature_extractor")
            return method()
    FEATURE_EXTRACTORS[name] = FeatureExtractorEntry(cls, factory, args)


def feature_extractor_to_config(module) -> dict:
    """{"type", "args"} for a registered network (TypeError saying what to do for others)."""
    for name, entry in FEATURE_EXTRACTORS.items():
        if type(module) is entry.cls:
            args = entry.args(module)
            try:
                if json.loads(json.dumps(args)) != args:
                    raise ValueError
            except (TypeError, ValueError):
                raise TypeError(f"feature_extractor: the arguments of {name} are not JSON values that round-trip: "
                                f"{args!r:.200}") from None
            return {"type": name, "args": args}
    raise TypeError(f"kernel: cannot save a Warped kernel whose feature_extractor is "
                    f"{type(module).__module__}.{type(module).__qualname__}: model files are rebuilt without "
                    f"running code from them, so only registered networks can be written. Use "
                    f"flashgp.kernels.MLP, or register the class in the programs that save and load: "
                    f"flashgp.serialize.register_feature_extractor(name, cls, args=lambda net: {{...JSON kwargs "
                    f"that rebuild it...}}). Registered: {sorted(FEATURE_EXTRACTORS)}. (torch.save of the "
                    f"model's state_dict keeps the weights of any network.)")


def feature_extractor_from_config(config, what: str = "feature_extractor"):
    """Rebuild a registered network (weights at their initial values) from its config."""
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise ConfigError(f"{what}: expected a dict with a 'type' string, got {config!r:.200}")
    if set(config) != {"type", "args"} or not isinstance(config["args"], dict):
        raise ConfigError(f"{what}: expected keys 'type' and 'args' (a dict), got {sorted(config)}")
    entry = FEATURE_EXTRACTORS.get(config["type"])
    if entry is None:
        raise ConfigError(f"{what}: the network type {config['type']!r:.50} is not registered (known: "
                          f"{sorted(FEATURE_EXTRACTORS)}); call flashgp.serialize.register_feature_extractor"
                          f"({config['type']!r:.50}, YourNetwork) before loading")
    if entry.numel is not None:
        _check_declared(what, entry.numel(config["args"]), f"{config['type']}({config['args']!r:.100})")
    try:
        module = entry.factory(**config["args"])
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what}: cannot build {config['type']} from {config['args']!r:.200}: {err}") from None
    if type(module) is not entry.cls:
        raise ConfigError(f"{what}: the factory of {config['type']} built a {type(module).__name__}, not a "
                          f"{entry.cls.__name__}")
    if entry.args(module) != config["args"]:
        raise ConfigError(f"{what}: arguments {config['args']!r:.200} do not round-trip for {config['type']}")
    return module
