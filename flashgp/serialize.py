# Conversion of model parts (kernels, likelihoods, means, solvers) to JSON-ready dicts and back.
# Only allowlisted classes are rebuilt, from their constructor arguments; tensors travel separately.
from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable

import torch

from . import kernels as K
from .likelihoods import Bernoulli, FixedNoise, Gaussian, Poisson, Softmax, StudentT
from .means import Constant, Linear as LinearMean, TaskMean, Zero
from .solvers import CG, Auto, Cholesky, Nystrom, PivotedCholesky, RPCholesky, Vecchia

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float64": torch.float64}


class ConfigError(ValueError):
    """A configuration dict that does not describe an allowlisted flashgp object."""


# ----- declared sizes ------------------------------------------------------------------------

_SIZE_LIMIT: ContextVar = ContextVar("flashgp_declared_size_limit", default=None)


@contextmanager
def declared_size_limit(numel: int):
    """While active, the readers below refuse (ConfigError) a configuration whose declared shapes
    (batch shapes, ``ard_dims``, a FixedNoise ``shape``, a Linear mean's ``input_dims``) give a
    parameter or buffer of more than ``numel`` elements, before allocating it. ``fg.load`` passes
    the largest tensor its file holds: every such tensor must match one of them."""
    token = _SIZE_LIMIT.set(int(numel))
    try:
        yield
    finally:
        _SIZE_LIMIT.reset(token)


def _check_declared(what: str, numel: int, described: str) -> None:
    limit = _SIZE_LIMIT.get()
    if limit is not None and numel > limit:
        raise ConfigError(f"{what}: {described} declares a tensor of {numel} elements, more than any "
                          f"stored tensor holds ({limit}); refusing to allocate it")


# ----- common argument readers -------------------------------------------------------------

def _common(kernel: K.Kernel) -> dict:
    """active_dims and batch_shape, which every leaf kernel's constructor takes."""
    dims = kernel.active_dims
    return {"active_dims": None if dims is None else [int(i) for i in dims.tolist()],
            "batch_shape": list(kernel.batch_shape)}


def _with_ard(kernel) -> dict:
    return {**_common(kernel), "ard_dims": kernel.ard_dims}


@dataclass(frozen=True)
class KernelEntry:
    """How one kernel class is written and rebuilt.

    cls: the class (matched exactly, subclasses are refused).
    args: kernel -> dict of JSON-ready constructor keyword arguments.
    children: kernel -> list of member kernels, passed positionally to the constructor.
    """

    cls: type
    args: Callable[[K.Kernel], dict]
    children: Callable[[K.Kernel], list] | None = None


# The kernel registry: a new kernel adds one entry. Hyperparameter values are not constructor
# arguments here: they come back with the state dict.
KERNELS: dict[str, KernelEntry] = {
    "RBF": KernelEntry(K.RBF, _with_ard),
    "Matern": KernelEntry(K.Matern, lambda k: {**_with_ard(k), "nu": k.nu}),
    "RQ": KernelEntry(K.RQ, _with_ard),
    "Periodic": KernelEntry(K.Periodic, _with_ard),
    "Linear": KernelEntry(K.Linear, _common),
    "Polynomial": KernelEntry(K.Polynomial, lambda k: {**_common(k), "power": k.power}),
    "Scale": KernelEntry(K.Scale, lambda k: {}, lambda k: [k.base]),
    "Sum": KernelEntry(K.Sum, lambda k: {}, lambda k: list(k.kernels)),
    "Product": KernelEntry(K.Product, lambda k: {}, lambda k: list(k.kernels)),
    "Interpolated": KernelEntry(K.Interpolated, lambda k: k.config_args(), lambda k: [k.base]),
    "Multitask": KernelEntry(K.Multitask, lambda k: {"num_tasks": k.num_tasks, "rank": k.rank}, lambda k: [k.base]),
    "LMC": KernelEntry(K.LMC, lambda k: {}, lambda k: list(k.members)),
    "Categorical": KernelEntry(K.Categorical, lambda k: {**_common(k), "num_levels": k.num_levels, "kind": k.kind,
                                                         "rank": k.rank}),
    "HilbertSpace": KernelEntry(K.HilbertSpace, lambda k: {
        "num_basis": k.requested_basis, "boundary_factor": k.boundary_factor, "center": k.center,
        "half_width": k.half_width, "num_columns": k.num_columns}, lambda k: [k.base]),
    "Warped": KernelEntry(K.Warped, lambda k: {"feature_extractor": feature_extractor_to_config(k.feature_extractor)},
                          lambda k: [k.base]),
}

SOLVERS = {cls.__name__: cls for cls in (Cholesky, CG, Auto, PivotedCholesky, RPCholesky, Nystrom, Vecchia)}
# solver fields added after files were first written: files without them get the defaults
LATER_SOLVER_FIELDS = {"PivotedCholesky": {"refresh_every", "max_rank", "eval_rank", "block_size"},
                       "CG": {"memory_budget", "reorthogonalize", "local_neighbors", "variance_tol"}}


def _registered_name(obj, table: dict, what: str) -> str:
    name = type(obj).__name__
    entry = table.get(name)
    cls = entry.cls if isinstance(entry, KernelEntry) else entry
    if cls is None or type(obj) is not cls:
        raise TypeError(f"{what}: cannot serialize {type(obj).__module__}.{type(obj).__qualname__}; "
                        f"supported: {sorted(table)}")
    return name


def _split(config, what: str, allowed: dict) -> tuple[str, dict, list]:
    """Check a {"type", "args"[, "children"]} dict against ``allowed`` and return its parts."""
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise ConfigError(f"{what}: expected a dict with a 'type' string, got {config!r:.200}")
    extra = set(config) - {"type", "args", "children"}
    if extra:
        raise ConfigError(f"{what}: unexpected keys {sorted(extra)}")
    if config["type"] not in allowed:
        raise ConfigError(f"{what}: type {config['type']!r} is not one of {sorted(allowed)}")
    args, children = config.get("args", {}), config.get("children", [])
    if not isinstance(args, dict) or not isinstance(children, list):
        raise ConfigError(f"{what}: 'args' must be a dict and 'children' a list")
    return config["type"], args, children


def _construct(cls, what: str, *positional, **kwargs):
    try:
        return cls(*positional, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{what}: cannot build {cls.__name__} from {kwargs}: {err}") from None


def _check_keys(args: dict, expected: set, what: str) -> None:
    if set(args) != expected:
        raise ConfigError(f"{what}: expected arguments {sorted(expected)}, got {sorted(args)}")


# ----- kernels -----------------------------------------------------------------------------

def kernel_to_config(kernel: K.Kernel) -> dict:
    """A JSON-ready tree {"type", "args", "children"} describing ``kernel``'s structure."""
    name = _registered_name(kernel, KERNELS, "kernel")
    entry = KERNELS[name]
    config = {"type": name, "args": entry.args(kernel)}
    if entry.children is not None:
        config["children"] = [kernel_to_config(k) for k in entry.children(kernel)]
    return config


def kernel_from_config(config: dict, what: str = "kernel") -> K.Kernel:
    """Rebuild a kernel (hyperparameters at their defaults) from ``kernel_to_config`` output."""
    name, args, children = _split(config, what, KERNELS)
    entry = KERNELS[name]
    if entry.children is None and children:
        raise ConfigError(f"{what}: {name} takes no member kernels")
    if entry.children is not None and not children:
        raise ConfigError(f"{what}: {name} needs member kernels")
    members = [kernel_from_config(c, f"{what}.{name}[{i}]") for i, c in enumerate(children)]
    args = dict(args)
    if "batch_shape" in args:
        args["batch_shape"] = _shape(args["batch_shape"], f"{what}.batch_shape")
        ard = args.get("ard_dims")
        columns = ard if _is_int(ard) and ard > 0 else 1
        _check_declared(what, math.prod(args["batch_shape"]) * columns,
                        f"batch_shape {list(args['batch_shape'])} with ard_dims {ard}")
    if name == "Warped":
        _check_keys(args, {"feature_extractor"}, what)
        args["feature_extractor"] = feature_extractor_from_config(args["feature_extractor"], f"{what}.feature_extractor")
    kernel = _construct(entry.cls, what, *members, **args)
    if entry.args(kernel) != config.get("args", {}):  # e.g. an argument the format does not carry
        raise ConfigError(f"{what}: arguments {config.get('args')} do not round-trip for {name}")
    return kernel


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape(value, what: str, declares: bool = False) -> tuple:
    """``value`` (a JSON list of ints >= 0) as a tuple; ``declares``: the shape of a tensor the
    reader allocates, checked against ``declared_size_limit``."""
    if not isinstance(value, list) or not all(_is_int(v) and v >= 0 for v in value):
        raise ConfigError(f"{what}: expected a list of ints >= 0, got {value!r:.100}")
    if declares:
        _check_declared(what, math.prod(value), f"the shape {value!r:.100}")
    return tuple(value)


# ----- likelihoods and means -----------------------------------------------------------------

LIKELIHOODS = {"Gaussian": Gaussian, "FixedNoise": FixedNoise, "Bernoulli": Bernoulli, "StudentT": StudentT,
               "Poisson": Poisson, "Softmax": Softmax}


def likelihood_to_config(likelihood) -> dict:
    """Gaussian: noise floor and batch shape; FixedNoise: the shape of its noise buffer;
    Bernoulli: link and quadrature points; StudentT: df (None when learned: its value is in the
    state dict), learn_df, batch shape and quadrature points; Poisson: quadrature points;
    Softmax: num_classes, samples and seed."""
    if type(likelihood) is Gaussian:
        return {"type": "Gaussian", "args": {"noise_floor": likelihood._constraints["noise"].lower,
                                             "batch_shape": list(likelihood.batch_shape)}}
    if type(likelihood) is FixedNoise:
        return {"type": "FixedNoise", "args": {"shape": list(likelihood.noise.shape)}}
    if type(likelihood) is Bernoulli:
        return {"type": "Bernoulli", "args": {"link": likelihood.link, "points": likelihood.points}}
    if type(likelihood) is StudentT:
        return {"type": "StudentT", "args": {"df": None if likelihood.learn_df else likelihood.df,
                                             "learn_df": likelihood.learn_df,
                                             "batch_shape": list(likelihood.batch_shape),
                                             "points": likelihood.points}}
    if type(likelihood) is Poisson:
        return {"type": "Poisson", "args": {"points": likelihood.points}}
    if type(likelihood) is Softmax:
        return {"type": "Softmax", "args": {"num_classes": likelihood.num_classes, "samples": likelihood.samples,
                                            "seed": likelihood.seed}}
    raise TypeError(f"likelihood: cannot serialize {type(likelihood).__name__}; "
                    f"supported: {', '.join(LIKELIHOODS)}")


def likelihood_from_config(config: dict):
    """Rebuild a likelihood (noise values, a learned df, come back with the state dict). Files
    written before the logit link and learned df have Bernoulli {points} (probit) and StudentT
    {df, batch_shape, points} (df fixed)."""
    name, args, _ = _split(config, "likelihood", LIKELIHOODS)
    if name == "Gaussian":
        _check_keys(args, {"noise_floor", "batch_shape"}, "likelihood")
        floor = args["noise_floor"]
        if isinstance(floor, bool) or not isinstance(floor, (int, float)):
            raise ConfigError(f"likelihood.noise_floor: expected a number, got {floor!r:.100}")
        return _construct(Gaussian, "likelihood", noise=floor + 1.0, noise_floor=floor,
                          batch_shape=_shape(args["batch_shape"], "likelihood.batch_shape", True))
    if name == "Bernoulli":
        _check_keys(args, {"points"} | ({"link"} & set(args)), "likelihood")
        link = args.get("link", "probit")
        if not isinstance(link, str):
            raise ConfigError(f"likelihood.link: expected a string, got {link!r:.100}")
        return _construct(Bernoulli, "likelihood", link=link, points=_points(args["points"]))
    if name == "StudentT":
        return _student_t_from_config(args)
    if name == "Poisson":
        _check_keys(args, {"points"}, "likelihood")
        return _construct(Poisson, "likelihood", points=_points(args["points"]))
    if name == "Softmax":
        _check_keys(args, {"num_classes", "samples", "seed"}, "likelihood")
        for key in ("num_classes", "samples", "seed"):
            if not _is_int(args[key]):
                raise ConfigError(f"likelihood.{key}: expected an int, got {args[key]!r:.100}")
        return _construct(Softmax, "likelihood", **args)
    _check_keys(args, {"shape"}, "likelihood")
    shape = _shape(args["shape"], "likelihood.shape", True)
    return _construct(FixedNoise, "likelihood", torch.ones(shape))


def _student_t_from_config(args: dict):
    _check_keys(args, {"df", "batch_shape", "points"} | ({"learn_df"} & set(args)), "likelihood")
    learn_df, df = args.get("learn_df", False), args["df"]  # no learn_df: an older file, df fixed
    if not isinstance(learn_df, bool):
        raise ConfigError(f"likelihood.learn_df: expected a bool, got {learn_df!r:.100}")
    if learn_df and df is not None:
        raise ConfigError(f"likelihood.df: expected null for a learned df (its value is in the state dict), "
                          f"got {df!r:.100}")
    if not learn_df and (isinstance(df, bool) or not isinstance(df, (int, float))):
        raise ConfigError(f"likelihood.df: expected a number, got {df!r:.100}")
    return _construct(StudentT, "likelihood", df=4.0 if learn_df else df, scale=1.0, learn_df=learn_df,
                      points=_points(args["points"]),
                      batch_shape=_shape(args["batch_shape"], "likelihood.batch_shape", True))


def _points(value) -> int:
    if not _is_int(value):
        raise ConfigError(f"likelihood.points: expected an int, got {value!r:.100}")
    return value


def mean_to_config(mean) -> dict:
    """Zero, Constant (batch shape), Linear (input_dims, bias, batch shape) or TaskMean (num_tasks and
    its base mean's config)."""
    if type(mean) is Zero:
        return {"type": "Zero", "args": {}}
    if type(mean) is Constant:
        return {"type": "Constant", "args": {"batch_shape": list(mean.raw_constant.shape)}}
    if type(mean) is LinearMean:
        return {"type": "Linear", "args": {"input_dims": mean.weights.shape[-1],
                                           "bias": mean.bias is not None,
                                           "batch_shape": list(mean.weights.shape[:-1])}}
    if type(mean) is TaskMean:
        return {"type": "TaskMean", "args": {"num_tasks": mean.num_tasks, "base": mean_to_config(mean.base)}}
    raise TypeError(f"mean: cannot serialize {type(mean).__name__}; supported: Zero, Constant, Linear, TaskMean")


def mean_from_config(config: dict):
    """Rebuild a mean function (its values come back with the state dict)."""
    name, args, _ = _split(config, "mean", {"Zero": 0, "Constant": 0, "Linear": 0, "TaskMean": 0})
    if name == "TaskMean":
        _check_keys(args, {"num_tasks", "base"}, "mean")
        if not _is_int(args["num_tasks"]):
            raise ConfigError(f"mean.num_tasks: expected an int, got {args['num_tasks']!r:.100}")
        if isinstance(args["base"], dict) and args["base"].get("type") == "TaskMean":
            raise ConfigError("mean.base: a TaskMean cannot hold another TaskMean")
        return _construct(TaskMean, "mean", args["num_tasks"], mean_from_config(args["base"]))
    if name == "Zero":
        _check_keys(args, set(), "mean")
        return Zero()
    if name == "Constant":
        _check_keys(args, {"batch_shape"}, "mean")
        return Constant(batch_shape=_shape(args["batch_shape"], "mean.batch_shape", True))
    _check_keys(args, {"input_dims", "bias", "batch_shape"}, "mean")
    if not _is_int(args["input_dims"]):
        raise ConfigError(f"mean.input_dims: expected an int, got {args['input_dims']!r:.100}")
    if not isinstance(args["bias"], bool):
        raise ConfigError(f"mean.bias: expected a bool, got {args['bias']!r:.100}")
    batch = _shape(args["batch_shape"], "mean.batch_shape")
    _check_declared("mean", math.prod(batch) * max(args["input_dims"], 1),
                    f"input_dims {args['input_dims']} with batch_shape {list(batch)}")
    return _construct(LinearMean, "mean", args["input_dims"], bias=args["bias"], batch_shape=batch)


# ----- solvers -------------------------------------------------------------------------------

def solver_to_config(solver) -> dict:
    """A solver configuration (Cholesky, CG, Auto, or a preconditioner configuration) with all its fields."""
    name = _registered_name(solver, SOLVERS, "solver")
    args = {}
    for f in dataclasses.fields(solver):
        value = getattr(solver, f.name)
        args[f.name] = solver_to_config(value) if dataclasses.is_dataclass(value) else value
    return {"type": name, "args": args}


def solver_from_config(config: dict, what: str = "solver"):
    """Rebuild a solver configuration; every field must be present (but those in
    LATER_SOLVER_FIELDS, which files written before they existed lack)."""
    name, args, _ = _split(config, what, SOLVERS)
    cls = SOLVERS[name]
    expected = {f.name for f in dataclasses.fields(cls)}
    _check_keys(args, expected - (LATER_SOLVER_FIELDS.get(name, set()) - set(args)), what)
    values = {}
    for key, value in args.items():
        if isinstance(value, dict):
            values[key] = solver_from_config(value, f"{what}.{key}")
        elif value is None or isinstance(value, (bool, int, float, str)):
            values[key] = value
        else:
            raise ConfigError(f"{what}.{key}: unexpected value {value!r:.100}")
    return _construct(cls, what, **values)


# ----- dtypes --------------------------------------------------------------------------------

def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32 (floating dtypes only)."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise TypeError(f"dtype: cannot serialize {dtype}; supported: {sorted(DTYPES)}")


def dtype_from_name(name) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"dtype: expected one of {sorted(DTYPES)}, got {name!r:.100}")
    return DTYPES[name]


# ----- models --------------------------------------------------------------------------------

# The model registry: name -> class (a ``flashgp.models.GPModel``). Files name their model by
# this key; only registered classes are rebuilt, matched exactly (subclasses are refused).
MODELS: dict[str, type] = {}


def register_model(name: str):
    """Class decorator: make a GPModel class savable and loadable under ``name``."""
    def register(cls):
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"name: the model name {name!r} is taken by {MODELS[name].__qualname__}")
        MODELS[name] = cls
        return cls
    return register


def model_name(model) -> str:
    """The registry name of ``model``'s class, or TypeError naming the registered ones."""
    for name, cls in MODELS.items():
        if type(model) is cls:
            return name
    raise TypeError(f"model: expected a registered flashgp model ({', '.join(sorted(MODELS))}), "
                    f"got {type(model).__module__}.{type(model).__qualname__}")


def model_class(name) -> type:
    """The registered model class called ``name``, or ConfigError."""
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(f"model: unknown model type {name!r:.50}; known: {sorted(MODELS)}")
    return MODELS[name]


# the networks of Warped kernels (a registry of their own; it uses the checks above)
from .serialize_networks import (FEATURE_EXTRACTORS, FeatureExtractorEntry,  # noqa: E402,F401
                                 feature_extractor_from_config, feature_extractor_to_config,
                                 register_feature_extractor)
