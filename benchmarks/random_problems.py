# Randomized reliability sweep: many small exact-GP problems, ill-conditioned ones included, each
# checked for finite results, non-negative variances and reported recoveries. Writes markdown + JSON.
"""Usage: python benchmarks/random_problems.py --num 1000 --out results/random_problems

Every problem is drawn from its seed alone (``sample_problem(seed)``), so a failure is rerun with
``--seeds 17,42``. The invariants checked per problem are listed in ``check_problem``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import random
import re
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import flashgp as fg  # noqa: E402
from flashgp.kernels import RBF, RQ, Linear, Matern, Periodic, Scale  # noqa: E402

KERNELS = ("rbf", "matern0.5", "matern1.5", "matern2.5", "rq", "periodic", "linear")
STRUCTURES = ("single", "sum", "product")
SOLVERS = ("cholesky", "cg", "auto")
DUPLICATES = ("none", "exact", "near")
GAUSSIAN_NOISE_FLOOR = 1e-4  # fg.likelihoods.Gaussian's default floor: FixedNoise goes below it

# NumericalWarning messages by recovery category (the first pattern that matches wins)
RECOVERY_PATTERNS = {
    "jitter": r"jitter",
    "cg_not_converged": r"^CG for the .*no convergence",
    "cg_breakdown": r"^CG for the .*broke down",
    "eigenvalue_floor": r"clamped \d+ eigenvalue",
    "sample_psd_fallback": r"negative eigenvalue",
    "slq_not_settled": r"^SLQ log determinant had not settled",
}


@dataclass(frozen=True)
class Problem:
    """One random problem; ``build_problem`` turns it (and its seed) into a model and test points.

    kernels: 1 (structure "single") or 2 base kernel names from KERNELS; structure: how they are
    combined (Scale(a), Scale(a) + Scale(b), Scale(a * b)). noise: the noise variance, held by
    FixedNoise when ``fixed_noise`` (always below the Gaussian likelihood's floor). The lengthscales
    are 10**log10_lengthscale times a factor in [10^-0.5, 10^0.5] per dimension (ARD) or shared.
    solver: "cholesky", "cg" or "auto" (Auto(max_cholesky_n=auto_threshold)).
    """

    seed: int
    kernels: tuple
    structure: str
    n: int
    d: int
    duplicates: str
    noise: float
    fixed_noise: bool
    log10_lengthscale: float
    ard: bool
    dtype: str
    solver: str
    auto_threshold: int

    def expected_path(self) -> str:
        """The inference path the solver must take ("cholesky" or "cg")."""
        if self.solver == "auto":
            return "cholesky" if self.n <= self.auto_threshold else "cg"
        return self.solver


def sample_problem(seed: int, max_n: int = 300) -> Problem:
    """A random problem drawn from ``seed`` alone (n in [1, max_n], log-uniform or uniform)."""
    rng = random.Random(seed)
    structure = rng.choices(STRUCTURES, weights=(2, 1, 1))[0]
    kernels = tuple(rng.choice(KERNELS) for _ in range(1 if structure == "single" else 2))
    log_n = rng.random() < 0.5  # half log-uniform (small n often), half uniform
    n = round(10 ** rng.uniform(0, math.log10(max_n))) if log_n else rng.randint(1, max_n)
    n = max(1, min(max_n, n))
    noise = 10 ** rng.uniform(-6, 0)
    return Problem(
        seed=seed, kernels=kernels, structure=structure, n=n, d=rng.randint(1, 5),
        duplicates=rng.choices(DUPLICATES, weights=(2, 1, 1))[0], noise=noise,
        fixed_noise=noise <= 1.5 * GAUSSIAN_NOISE_FLOOR or rng.random() < 0.3,
        log10_lengthscale=rng.uniform(-3, 3), ard=rng.random() < 0.5,
        dtype=rng.choice(("float32", "float64")), solver=rng.choice(SOLVERS),
        auto_threshold=rng.randint(max(0, n - 20), n + 20),
    )


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return 10 ** rng.uniform(math.log10(low), math.log10(high))


def _base_kernel(name: str, problem: Problem, rng: random.Random, x_scale: float):
    """One base kernel with random hyperparameters (float64; the model casts it)."""
    dims = problem.d if problem.ard else 1
    lengthscale = torch.tensor([10 ** (problem.log10_lengthscale + rng.uniform(-0.5, 0.5)) for _ in range(dims)],
                               dtype=torch.float64)
    ard = problem.d if problem.ard else None
    if name == "linear":
        return Linear(variance=_log_uniform(rng, 1e-2, 1e2))
    if name == "periodic":
        kernel = Periodic(ard_dims=ard, period=_log_uniform(rng, 0.1, 10) * x_scale)
    elif name == "rq":
        kernel = RQ(ard_dims=ard, alpha=_log_uniform(rng, 0.1, 10))
    elif name == "rbf":
        kernel = RBF(ard_dims=ard)
    else:
        kernel = Matern(nu=float(name[len("matern"):]), ard_dims=ard)
    kernel.lengthscale = lengthscale
    return kernel


def _kernel(problem: Problem, rng: random.Random, x_scale: float):
    parts = [_base_kernel(name, problem, rng, x_scale) for name in problem.kernels]
    if problem.structure == "single":
        return Scale(parts[0], outputscale=_log_uniform(rng, 1e-2, 1e2))
    if problem.structure == "sum":
        return (Scale(parts[0], outputscale=_log_uniform(rng, 1e-2, 1e2))
                + Scale(parts[1], outputscale=_log_uniform(rng, 1e-2, 1e2)))
    return Scale(parts[0] * parts[1], outputscale=_log_uniform(rng, 1e-2, 1e2))


def _inputs(problem: Problem, gen: torch.Generator, rng: random.Random):
    """(x (n, d), x_test (m, d), x_scale) in float64; x_test repeats some training points."""
    n, d = problem.n, problem.d
    x_scale = _log_uniform(rng, 0.1, 10)
    offset = 10 * x_scale if rng.random() < 0.2 else 0.0
    x = offset + x_scale * (2 * torch.rand(n, d, generator=gen, dtype=torch.float64) - 1)
    if problem.duplicates != "none" and n > 1:
        copies = max(1, n // 3)
        target = torch.randperm(n, generator=gen)[:copies]
        source = torch.randint(0, n, (copies,), generator=gen)
        x[target] = x[source]
        if problem.duplicates == "near":
            x[target] += 1e-7 * x_scale * torch.randn(copies, d, generator=gen, dtype=torch.float64)
    m_new = rng.randint(1, 20)
    fresh = offset + 1.2 * x_scale * (2 * torch.rand(m_new, d, generator=gen, dtype=torch.float64) - 1)
    seen = x[torch.randint(0, n, (rng.randint(1, min(n, 10)),), generator=gen)]
    return x, torch.cat([fresh, seen]), x_scale


def build_problem(problem: Problem):
    """(model, x_test) for ``problem``, deterministic in its seed."""
    gen = torch.Generator().manual_seed(problem.seed)
    rng = random.Random(problem.seed + 1_000_003)
    dtype = getattr(torch, problem.dtype)
    x, x_test, x_scale = _inputs(problem, gen, rng)
    w = torch.randn(problem.d, generator=gen, dtype=torch.float64) * 3 / x_scale
    f = torch.sin(x @ w) + 0.5 * torch.cos(2 * x @ w.flip(0))
    y = _log_uniform(rng, 0.1, 10) * f + problem.noise ** 0.5 * torch.randn(problem.n, generator=gen,
                                                                           dtype=torch.float64)
    kernel = _kernel(problem, rng, x_scale)
    if problem.fixed_noise:
        likelihood = fg.likelihoods.FixedNoise(torch.full((problem.n,), problem.noise, dtype=torch.float64))
    else:
        likelihood = fg.likelihoods.Gaussian(noise=problem.noise)
    solver = {"cholesky": fg.Cholesky(), "cg": fg.CG(),
              "auto": fg.Auto(max_cholesky_n=problem.auto_threshold)}[problem.solver]
    mean = fg.means.Constant(constant=float(y.mean()))
    model = fg.ExactGP(x.to(dtype), y.to(dtype), kernel, likelihood=likelihood, mean=mean, solver=solver)
    return model, x_test.to(dtype)


def classify(message: str) -> str:
    """The recovery category of a NumericalWarning message ("other" if none matches)."""
    for name, pattern in RECOVERY_PATTERNS.items():
        if re.search(pattern, message):
            return name
    return "other"


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _cholesky_fails(model) -> bool:
    """Whether K_hat (float64, as the Cholesky path forms it) needs jitter to be factored."""
    with torch.no_grad():
        noise = model.likelihood.noise_diag(model.num_train).double()
        k_hat = model.kernel(model.train_x.double()) + torch.diag_embed(noise)
        return bool(torch.linalg.cholesky_ex(k_hat)[1].any())


def _troubled_solves(diagnostics: dict, prefixes) -> int:
    """CG solves recorded in diagnostics that did not converge or broke down."""
    return sum(1 for p in prefixes if diagnostics.get(p + "converged") is False
               or diagnostics.get(p + "cg_breakdowns", 0) > 0)


def reference_errors(model, x_test, mll: float, post) -> dict:
    """Errors against a float64 Cholesky reference of the same model: mll (per point, relative to
    max(1, |reference|)), posterior mean (max, in prior standard deviations) and variance (max, in
    prior variances)."""
    reference = copy.deepcopy(model).double()
    reference.solver = fg.Cholesky()
    with torch.no_grad():
        ref_mll = float(reference.mll().sum())
        ref_post = reference.posterior(x_test.double())
        prior = reference.kernel.diag(x_test.double()).clamp_min(1e-300)
        mean_err = ((post.mean.double() - ref_post.mean).abs() / prior.sqrt()).max()
        var_err = ((post.variance.double() - ref_post.variance).abs() / prior).max()
    return {"mll_err": abs(mll - ref_mll) / max(1.0, abs(ref_mll)), "mean_err": float(mean_err), "var_err": float(var_err)}


def run_checks(problem: Problem, model, x_test, failures: list, facts: dict) -> None:
    """The invariants, appending what is broken to ``failures`` and what happened to ``facts``.

    mll finite, its gradient finite, the path shown in diagnostics (the one the solver implies);
    posterior and predictive mean finite, variances finite and >= 0, every negative raw variance
    counted in diagnostics["variance_clamped"]; joint samples finite; jitter reported whenever the
    float64 factorization needs it; one CG warning per unconverged solve (no more, no fewer).
    """
    gen = torch.Generator().manual_seed(problem.seed)
    mll = model.mll(generator=gen)
    mll_diag = dict(model.diagnostics)
    facts["mll"] = float(mll.detach())
    facts["path"] = mll_diag.get("path")
    facts["jitter"] = mll_diag.get("jitter", 0.0)
    facts["cg_iterations"] = mll_diag.get("cg_iterations")
    if mll_diag.get("path") != problem.expected_path():
        failures.append(f"mll path {mll_diag.get('path')!r}, expected {problem.expected_path()!r}")
    if not _finite(mll):
        failures.append(f"mll not finite: {float(mll.detach())}")
        return
    (-mll.sum()).backward()
    bad = [name for name, p in model.named_parameters() if p.grad is not None and not _finite(p.grad)]
    if bad:
        failures.append(f"gradient not finite for {bad}")
    if mll_diag.get("path") == "cholesky" and _cholesky_fails(model) and not mll_diag.get("jitter"):
        failures.append("K_hat needed jitter but diagnostics['jitter'] is 0")

    post = model.posterior(x_test)
    raw_var = post.covariance.diagonal()
    variance, mean = post.variance, post.mean
    post_diag = post.diagnostics
    if post_diag.get("path") != problem.expected_path() or "variance_method" not in post_diag:
        failures.append(f"posterior diagnostics lack the path: {sorted(post_diag)}")
    if not _finite(mean):
        failures.append("posterior mean not finite")
    if not _finite(variance) or bool((variance < 0).any()):
        failures.append(f"posterior variance not finite or negative (min {float(variance.min()):.3g})")
    negative = int((raw_var < 0).sum())
    if post_diag.get("variance_clamped") != negative:
        failures.append(f"{negative} negative raw variances, diagnostics say {post_diag.get('variance_clamped')}")
    prior_var = model.kernel.diag(x_test)
    facts["variance_clamped"] = negative
    facts["worst_clamp_rel"] = float((-raw_var / prior_var).max().clamp_min(0).detach()) if negative else 0.0
    facts["prediction_jitter"] = post_diag.get("jitter", 0.0)
    samples = post.sample(2, generator=gen)
    if not _finite(samples):
        failures.append("posterior samples not finite")
    facts["sample_jitter"] = post_diag.get("sample_jitter", 0.0)
    facts["sample_eigen_clamped"] = post_diag.get("sample_eigen_clamped", 0)
    troubled = _troubled_solves(mll_diag, [""]) + _troubled_solves(post_diag, ["", "variance_"])

    with warnings.catch_warnings():  # the reference's own recoveries are not the model's
        warnings.simplefilter("ignore", fg.NumericalWarning)
        facts.update(reference_errors(model, x_test, float(mll.detach().sum()), post))

    pred = model.predict(x_test)  # reuses the cached mean solve; solves for the variances again
    if not _finite(pred.mean) or not _finite(pred.variance) or bool((pred.variance < 0).any()):
        failures.append("predictive mean/variance not finite or negative")
    facts["troubled_cg_solves"] = troubled + _troubled_solves(pred.diagnostics, ["variance_"])


def check_problem(problem: Problem) -> dict:
    """Build and check one problem. Returns a JSON-ready record: the problem, status ("ok",
    "failure" or "error" for a documented NotPSDError), failures, recoveries and warnings."""
    failures, facts = [], {}
    start = time.perf_counter()
    status = "ok"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model, x_test = build_problem(problem)
            run_checks(problem, model, x_test, failures, facts)
        except fg.NotPSDError as err:
            status, facts["error"] = "error", str(err)
        except Exception as err:  # a crash is a failure, whatever its type
            failures.append(f"crash: {type(err).__name__}: {err} @ {traceback.format_exc(limit=-3)}")
    messages = [(w.category.__name__, str(w.message)) for w in caught]
    numerical = [m for c, m in messages if c == "NumericalWarning"]
    warned = Counter(classify(m) for m in numerical)
    recoveries = {  # what diagnostics recorded, and each must have been warned about (but clamps)
        "cholesky_jitter": int(bool(facts.get("jitter") or facts.get("prediction_jitter"))),
        "sample_jitter": int(bool(facts.get("sample_jitter"))),
        "sample_psd_fallback": int(bool(facts.get("sample_eigen_clamped"))),
        "variance_clamp": int(bool(facts.get("variance_clamped"))),
        "cg_not_converged": warned["cg_not_converged"], "cg_breakdown": warned["cg_breakdown"],
        "eigenvalue_floor": warned["eigenvalue_floor"], "slq_not_settled": warned["slq_not_settled"],
    }
    jittered = sum(1 for key in ("jitter", "prediction_jitter", "sample_jitter") if facts.get(key))
    if warned["jitter"] != jittered:  # mll, prediction cache and sampling each factor once
        failures.append(f"{warned['jitter']} jitter warnings, diagnostics record jitter in {jittered} factorization(s)")
    if warned["sample_psd_fallback"] != recoveries["sample_psd_fallback"]:
        failures.append("sampling fell back to the PSD part without both a warning and diagnostics")
    cg_warnings = warned["cg_not_converged"] + warned["cg_breakdown"]
    if "troubled_cg_solves" in facts and cg_warnings != facts["troubled_cg_solves"]:
        failures.append(f"{cg_warnings} CG warnings for {facts['troubled_cg_solves']} unconverged or broken-down "
                        "solves (expected one each)")
    if warned["other"]:
        failures.append(f"unclassified NumericalWarning: {[m for m in numerical if classify(m) == 'other']}")
    others = [f"{c}: {m}" for c, m in messages if c != "NumericalWarning"]
    if others:
        failures.append(f"non-numerical warnings: {others[:3]}")
    if failures:
        status = "failure"
    return {"problem": asdict(problem), "status": status, "failures": failures, "facts": facts,
            "recoveries": {k: v for k, v in recoveries.items() if v}, "warnings": sorted(set(m[:300] for m in numerical))[:8],
            "seconds": round(time.perf_counter() - start, 4)}


INACCURATE = 0.1  # an error above this (see accuracy_rows) counts a problem as inaccurate


def accuracy_rows(records: list) -> list:
    """Per (dtype, path): median and max of the reference errors, and how many problems were
    inaccurate (an error above INACCURATE) and of those how many raised no warning at all."""
    groups = {}
    for r in records:
        if "mll_err" in r["facts"]:
            groups.setdefault((r["problem"]["dtype"], r["facts"]["path"]), []).append(r)
    rows = []
    for (dtype, path), group in sorted(groups.items()):
        row = {"dtype": dtype, "path": path, "problems": len(group)}
        for key in ("mll", "mean", "var"):
            values = torch.tensor([r["facts"][key + "_err"] for r in group], dtype=torch.float64)
            row[key + "_median"], row[key + "_max"] = float(values.median()), float(values.max())
        bad = [r for r in group if max(r["facts"][k + "_err"] for k in ("mll", "mean", "var")) > INACCURATE]
        row["inaccurate"], row["silent"] = len(bad), sum(1 for r in bad if not r["warnings"])
        row["silent_seeds"] = [r["problem"]["seed"] for r in bad if not r["warnings"]]
        rows.append(row)
    return rows


def summarize(records: list, command: str, seconds: float) -> tuple[str, dict]:
    """(markdown, summary dict) from the per-problem records."""
    status = Counter(r["status"] for r in records)
    recovery_problems = Counter(k for r in records for k, v in r["recoveries"].items() if v)
    by_group = Counter((r["problem"]["dtype"], r["facts"].get("path") or r["problem"]["solver"], r["status"])
                       for r in records)
    failures = [{"seed": r["problem"]["seed"], "failures": r["failures"]} for r in records if r["status"] == "failure"]
    errors = [{"seed": r["problem"]["seed"], "error": r["facts"]["error"]} for r in records if r["status"] == "error"]
    summary = {"command": command, "problems": len(records), "status": dict(status),
               "problems_with_recovery": dict(recovery_problems), "failures": failures, "errors": errors,
               "seconds": round(seconds, 1), "torch": torch.__version__, "threads": torch.get_num_threads()}
    lines = ["# Random-problem reliability sweep", "",
             f"- command: `{command}`",
             f"- machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
             f"{seconds:.0f} s in all",
             "- problems: kernels RBF, Matern 1/2, 3/2, 5/2, RQ, Periodic, Linear, alone (with Scale), summed "
             "or multiplied; n in [1, max_n] (half log-uniform, half uniform), d in [1, 5]; a third of them with exact or near "
             "(1e-7 relative) duplicate inputs; noise variance log-uniform in [1e-6, 1] (FixedNoise below "
             "the Gaussian floor 1e-4); lengthscales log-uniform in [1e-3, 1e3]; float32 and float64; "
             "Cholesky(), CG(), Auto(max_cholesky_n near n)",
             "- checked: mll and its gradient finite; posterior/predictive mean finite, variance finite and "
             ">= 0; raw negative variances counted in diagnostics; samples finite; the path in diagnostics; "
             "jitter reported when float64 Cholesky needs it; exactly one CG warning per unconverged or broken-down solve", "",
             "| status | problems |", "|---|---:|"]
    lines += [f"| {k} | {status.get(k, 0)} |" for k in ("ok", "failure", "error")]
    lines += ["", "Problems in which each recovery happened (jitter, sampling and clamps as recorded in "
              "diagnostics; CG trouble and eigenvalue floors as warned):", "", "| recovery | problems |",
              "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(recovery_problems.items())]
    lines += ["", "| dtype | path | status | problems |", "|---|---|---|---:|"]
    lines += [f"| {d} | {p} | {s} | {c} |" for (d, p, s), c in sorted(by_group.items())]
    accuracy = accuracy_rows(records)
    summary["accuracy"] = accuracy
    lines += ["", "Accuracy against a float64 Cholesky reference of the same model (not an invariant: "
              f"CG runs at its default settings). Errors: mll per point relative to max(1, |mll|), "
              "posterior mean in prior standard deviations, variance in prior variances (max over test "
              f"points). 'inaccurate': some error above {INACCURATE}; 'silent': of those, no warning at all.",
              "", "| dtype | path | problems | mll median / max | mean median / max | var median / max | "
              "inaccurate | silent |", "|---|---|---:|---|---|---|---:|---:|"]
    for row in accuracy:
        cells = " | ".join(f"{row[k + '_median']:.1e} / {row[k + '_max']:.1e}" for k in ("mll", "mean", "var"))
        lines.append(f"| {row['dtype']} | {row['path']} | {row['problems']} | {cells} | {row['inaccurate']} | "
                     f"{row['silent']} |")
    if failures:
        lines += ["", "Failures (rerun with `--seeds`):", ""]
        lines += [f"- seed {f['seed']}: {'; '.join(f['failures'])[:400]}" for f in failures[:50]]
    if errors:
        lines += ["", "Documented errors (NotPSDError):", ""]
        lines += [f"- seed {e['seed']}: {e['error'][:300]}" for e in errors[:50]]
    return "\n".join(lines) + "\n", summary


def compact(record: dict) -> dict:
    """A short form of a record for the JSON file (rerun the seed for everything else)."""
    problem, facts = record["problem"], record["facts"]
    out = {"seed": problem["seed"], "dtype": problem["dtype"], "path": facts.get("path"), "n": problem["n"],
           "status": record["status"], "recoveries": record["recoveries"]}
    out.update({k: float(f"{facts[k]:.3g}") for k in ("mll_err", "mean_err", "var_err") if k in facts})
    if record["failures"] or "error" in facts:
        out["failures"] = record["failures"] or [facts["error"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=1000, help="problems (seeds start..start+num-1)")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (overrides --num/--start)")
    parser.add_argument("--max-n", type=int, default=300)
    parser.add_argument("--out", default="results/random_problems")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else range(args.start, args.start + args.num)
    command = "python " + " ".join(sys.argv)
    records, start = [], time.perf_counter()
    for i, seed in enumerate(seeds):
        record = check_problem(sample_problem(seed, args.max_n))
        records.append(record)
        if record["status"] != "ok":
            print(json.dumps({"seed": seed, "status": record["status"], "failures": record["failures"],
                              "error": record["facts"].get("error")})[:600], flush=True)
        if (i + 1) % 50 == 0:
            print(f"{i + 1} problems, {time.perf_counter() - start:.0f} s", flush=True)
    markdown, summary = summarize(records, command, time.perf_counter() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".md").write_text(markdown)
    notable = [compact(r) for r in records if r["status"] != "ok" or r["recoveries"] or max(
        r["facts"].get(k + "_err", 0.0) for k in ("mll", "mean", "var")) > INACCURATE]
    Path(args.out + ".json").write_text(json.dumps({"summary": summary, "notable_problems": notable}, indent=1))
    print(markdown)


if __name__ == "__main__":
    main()
