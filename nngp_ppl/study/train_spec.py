r"""The ``[train]`` block of a TOML study: train one run's networks on a data set.

A study (:mod:`nngp_ppl.study.spec`) may hold one ``[train]`` table. ``nngp-ppl reproduce`` then
trains the networks of the run it names -- the sampler's networks, drawn with the study's
seed, so step 0 is that run's initialisation ensemble -- on the data set, records their
correlators of orders 1..6 at the run's inputs after each of ``steps``
(:func:`nngp_ppl.training.trainer.train_correlators`), compares them with the infinite-width
oracle (:func:`nngp_ppl.theory.ntk.training_oracle`) and reports the flow
(:mod:`nngp_ppl.study.training_stages`, :mod:`nngp_ppl.study.report.training`). The schema::

    [train]
    run = "erf"                       # the run whose networks are trained (default: the
                                      # study's only run; required with several)
    x_train = [-1.0, -0.3, 0.4, 1.1]  # the data: numbers (d_in = 1) or lists of d_in
    y_train = [0.2, -0.4, 0.1, 0.6]   # numbers, one target per point ...
    # data = "points.csv"             # ... or a file instead: .npz with arrays x_train
                                      # (n, d_in) and y_train (n,), read without pickle, or
                                      # .csv of rows x_1..x_{d_in}, y (one header row allowed);
                                      # a relative path is taken from the study file's folder
    steps = [0, 10, 100, 1000]        # required: recorded training steps (0 = untrained)
    learning_rate = 0.5               # required: eta > 0 of L = 1/(2n) sum (f(x_i) - y_i)^2
    optimizer = "gd"                  # gd (default), or optax's sgd, momentum, adam
    momentum = 0.9                    # of optimizer = "momentum"
    parametrisation = "ntk"           # ntk (default) or standard (nngp_ppl.theory.ntk)
    n_nets = 4000                     # networks per width (default: the study's n_nets)
    widths = [20, 200]                # default: the run's widths
    seed = 0                          # default: the study's seed

Every key is checked when the study is read (:func:`train_spec`), and again before any
stage runs (:func:`check_train`), with one message naming the file, ``[train]`` and the
key: the data finite, one target per point, of the run's input dimension; the run
trainable (a single-layer ensemble, which :mod:`nngp_ppl.training.trainer` draws as the sampler
does); a non-gd optimiser only with optax installed; and, for gradient descent in the NTK
parametrisation, a learning rate below the stability bound :math:`2n/\lambda_{max}(\Theta)`
of the linearised dynamics (:math:`\Theta` the NTK on the training points), beyond which
the infinite-width mean diverges.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _checks
from .._checks import NNGPInputError
from ..sampling.sampler import MAX_WIDTH
from ..theory.ntk import PARAMETRISATIONS, ntk
from ..training.trainer import OPTIMIZERS, check_trainable, training_setup

__all__ = [
    "MAX_STEP", "TRAIN_KEYS", "TrainSpec", "check_train", "comparison_file", "files",
    "flow_file", "plan_entry", "read_training_data", "train_spec", "trained_file",
    "trained_run",
]

#: Keys of the ``[train]`` table: (required, description of what is allowed).
TRAIN_KEYS = ("run", "x_train", "y_train", "data", "steps", "learning_rate", "optimizer",
              "momentum", "parametrisation", "n_nets", "widths", "seed")
#: Largest recorded step (a typo of a few zeros would train for days).
MAX_STEP = 10**7


@dataclass(frozen=True)
class TrainSpec:
    """A study's ``[train]`` block, validated (module docstring). ``n_nets``, ``widths``
    and ``seed`` of None / () take the study's (``n_nets``, ``seed``) and the run's
    (``widths``): :meth:`resolved`."""

    run: str
    x_train: tuple
    y_train: tuple
    steps: tuple[int, ...]
    learning_rate: float
    optimizer: str = "gd"
    momentum: float = 0.9
    parametrisation: str = "ntk"
    n_nets: int | None = None
    widths: tuple[int, ...] = ()
    seed: int | None = None
    #: The data file the points were read from (None: given in the study); its values
    #: are the points above, so a changed file changes the stage's key.
    data: str | None = None

    def resolved(self, preset, run) -> TrainSpec:
        """This block with the study's and the run's defaults filled in."""
        return dataclasses.replace(
            self, n_nets=self.n_nets or preset.n_nets, widths=self.widths or run.widths,
            seed=preset.seed if self.seed is None else self.seed)

    @property
    def oracle_reason(self) -> str | None:
        """Why the infinite-width oracle does not describe this training, or None: it is
        gradient descent in the NTK parametrisation (:func:`training_oracle`)."""
        if self.optimizer != "gd":
            return (f"the infinite-width oracle is the gradient-descent flow; optimizer "
                    f"{self.optimizer!r} has none here")
        if self.parametrisation != "ntk":
            return ("the infinite-width oracle needs the NTK parametrisation (in the "
                    "standard one the NTK grows like N and a fixed learning rate has no "
                    "limit)")
        return None


def _where(source, key=None) -> str:
    return f"{source}: [train]" + (f": {key}" if key else "")


def _finite_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)))


def _points(v, where: str) -> np.ndarray:
    """x_train of the TOML: numbers (one coordinate each) or lists of equal length."""
    rows = [[p] if _finite_number(p) else p for p in v] if isinstance(v, list) else None
    if (not rows or not all(isinstance(p, list) and p and all(_finite_number(c) for c in p)
                            for p in rows) or len({len(p) for p in rows}) != 1):
        raise NNGPInputError(
            f"{where} must be a non-empty list of finite numbers (d_in = 1) or of lists of "
            f"d_in finite numbers, all of one length, got {v!r}")
    return np.asarray(rows, np.float64)


def _targets(v, where: str) -> np.ndarray:
    if not isinstance(v, list) or not v or not all(_finite_number(c) for c in v):
        raise NNGPInputError(f"{where} must be a non-empty list of finite numbers, got {v!r}")
    return np.asarray(v, np.float64)


def read_training_data(path, d_in: int, name: str = "--data") -> tuple[np.ndarray, np.ndarray]:
    """(x_train (n, d_in), y_train (n,)) from an ``.npz`` (arrays ``x_train``, ``y_train``,
    read without pickle: a file never runs code) or a ``.csv`` (rows ``x_1..x_{d_in}, y``,
    one header row allowed); shapes and finiteness checked, errors naming ``name``."""
    path = Path(path)
    if not path.is_file():
        raise NNGPInputError(f"{name}: no such file {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as f:
                if "x_train" not in f or "y_train" not in f:
                    raise NNGPInputError(
                        f"{name}: {path} must hold arrays x_train and y_train, found "
                        f"{sorted(f.files)}")
                x, y = np.asarray(f["x_train"]), np.asarray(f["y_train"])
        except (ValueError, OSError) as err:
            raise NNGPInputError(f"{name}: cannot read {path} as .npz ({err})") from None
    elif suffix == ".csv":
        try:
            table = np.loadtxt(path, delimiter=",", ndmin=2)
        except ValueError:
            try:
                table = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=1)
            except ValueError as err:
                raise NNGPInputError(f"{name}: {path} is not a numeric CSV ({err})") from None
        if table.shape[1] != d_in + 1:
            raise NNGPInputError(
                f"{name}: {path} has {table.shape[1]} columns; with d_in = {d_in} each row "
                f"must be {d_in} input coordinates and one target")
        x, y = table[:, :d_in], table[:, d_in]
    else:
        raise NNGPInputError(f"{name} must be a .npz or .csv file, got {path.name}")
    if x.dtype.kind not in "fiu" or y.dtype.kind not in "fiu":
        raise NNGPInputError(f"{name}: {path} must hold numbers")
    if x.ndim not in (1, 2) or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise NNGPInputError(
            f"{name}: {path} must hold x_train of shape (n, d_in) or (n,) and y_train of "
            f"shape (n,) with n >= 1, got {x.shape} and {y.shape}")
    x = x.reshape(len(x), -1).astype(np.float64)
    if x.shape[1] != d_in:
        raise NNGPInputError(f"{name}: {path} has points of dimension {x.shape[1]}; the "
                             f"ensemble's d_in is {d_in}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise NNGPInputError(f"{name}: {path} holds NaN or infinite values")
    return x, y.astype(np.float64)


def _steps(v, where: str) -> tuple[int, ...]:
    if (not isinstance(v, list) or not v
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_STEP
                       for s in v) or len(set(v)) != len(v)):
        raise NNGPInputError(f"{where} must be a non-empty list of distinct integers in "
                             f"0..{MAX_STEP:,} (0 = the untrained networks), got {v!r}")
    return tuple(sorted(v))


def _choice(v, allowed, where: str) -> str:
    if v not in allowed:
        raise NNGPInputError(f"{where} must be one of {list(allowed)}, got {v!r}")
    return v


def _positive(v, where: str, *, zero: bool = False) -> float:
    if not _finite_number(v) or v < 0 or (v == 0 and not zero):
        raise NNGPInputError(f"{where} must be a {'' if zero else 'positive '}finite number"
                             f"{' >= 0' if zero else ''}, got {v!r}")
    return float(v)


def _count(v, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 2 <= v <= 2**32:
        raise NNGPInputError(f"{where} must be an integer in 2..2**32 (standard errors need "
                             f"two networks per width), got {v!r}")
    return v


def _widths(v, where: str) -> tuple[int, ...]:
    if (not isinstance(v, list) or not v
            or not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_WIDTH
                       for w in v) or len(set(v)) != len(v)):
        raise NNGPInputError(f"{where} must be a list of distinct positive integers up to "
                             f"{MAX_WIDTH}, got {v!r}")
    return tuple(v)


def _seed(v, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise NNGPInputError(f"{where} must be an integer >= 0, got {v!r}")
    return _checks.seed(where, v)


def train_spec(table, source, runs) -> TrainSpec:
    """The ``[train]`` table of the study at ``source`` (its runs ``runs``), checked."""
    if not isinstance(table, dict):
        raise NNGPInputError(f"{_where(source)} must be a table")
    unknown = sorted(set(table) - set(TRAIN_KEYS))
    if unknown:
        raise NNGPInputError(f"{_where(source)}: unknown key {unknown[0]!r} (allowed: "
                             f"{', '.join(TRAIN_KEYS)})")
    for key in ("steps", "learning_rate"):
        if key not in table:
            raise NNGPInputError(f"{_where(source)}: missing required key {key!r}")
    keys = [r.key for r in runs]
    if "run" in table:
        run = table["run"]
        if run not in keys:
            raise NNGPInputError(f"{_where(source, 'run')} must name a run of the study "
                                 f"({', '.join(keys)}), got {run!r}")
    elif len(keys) == 1:
        run = keys[0]
    else:
        raise NNGPInputError(f"{_where(source)}: missing key 'run': name the run whose "
                             f"networks are trained ({', '.join(keys)})")
    spec = next(r for r in runs if r.key == run)
    x, y, data = _data(table, source, spec.d_in)
    w = {k: _where(source, k) for k in TRAIN_KEYS}
    out = TrainSpec(
        run=run, x_train=tuple(tuple(map(float, p)) for p in x),
        y_train=tuple(map(float, y)), steps=_steps(table["steps"], w["steps"]),
        learning_rate=_positive(table["learning_rate"], w["learning_rate"]),
        optimizer=_choice(table.get("optimizer", "gd"), OPTIMIZERS, w["optimizer"]),
        momentum=_positive(table.get("momentum", 0.9), w["momentum"], zero=True),
        parametrisation=_choice(table.get("parametrisation", "ntk"), PARAMETRISATIONS,
                                w["parametrisation"]),
        n_nets=_count(table["n_nets"], w["n_nets"]) if "n_nets" in table else None,
        widths=_widths(table["widths"], w["widths"]) if "widths" in table else (),
        seed=_seed(table["seed"], w["seed"]) if "seed" in table else None,
        data=data)
    return out


def _data(table: dict, source, d_in: int):
    """(x, y, file or None) from x_train/y_train or data, exactly one of the two."""
    given = [k for k in ("x_train", "y_train") if k in table]
    if "data" in table:
        if given:
            raise NNGPInputError(f"{_where(source)}: give the points either as x_train and "
                                 f"y_train or as data = \"FILE\", not both")
        name = table["data"]
        if not isinstance(name, str) or not name:
            raise NNGPInputError(f"{_where(source, 'data')} must be the path of a .npz or "
                                 f".csv file, got {name!r}")
        path = Path(name)
        if not path.is_absolute() and Path(str(source)).is_file():
            path = Path(str(source)).parent / path
        x, y = read_training_data(path, d_in, _where(source, "data"))
        return x, y, name
    if len(given) != 2:
        missing = "x_train and y_train" if not given else \
            ({"x_train", "y_train"} - set(given)).pop()
        raise NNGPInputError(f"{_where(source)}: missing {missing} (or data = \"FILE\")")
    x = _points(table["x_train"], _where(source, "x_train"))
    y = _targets(table["y_train"], _where(source, "y_train"))
    if len(y) != len(x):
        raise NNGPInputError(f"{_where(source, 'y_train')} must hold one target per x_train "
                             f"point ({len(x)}), got {len(y)}")
    if x.shape[1] != d_in:
        raise NNGPInputError(f"{_where(source, 'x_train')} has points of dimension "
                             f"{x.shape[1]}; the run's d_in is {d_in}")
    return x, y, None


def check_train(preset, source) -> None:
    """Check a study's ``[train]`` block against its runs before any stage (also one built
    or changed in Python): the run exists and is trainable, the data fit its ensemble,
    the optimiser is installed, the learning rate is stable (module docstring)."""
    spec = getattr(preset, "train", None)
    if spec is None:
        return
    if not isinstance(spec, TrainSpec):
        raise NNGPInputError(f"{_where(source)} must be a TrainSpec, got "
                             f"{type(spec).__name__}")
    runs = {r.key: r for r in preset.run_table}
    if spec.run not in runs:
        raise NNGPInputError(f"{_where(source, 'run')} must name a run of the study "
                             f"({', '.join(runs)}), got {spec.run!r}")
    run = runs[spec.run]
    net = run.net()
    try:
        check_trainable(net)
        training_setup(net, np.asarray(spec.x_train), np.asarray(spec.y_train),
                       list(spec.steps), spec.learning_rate, optimizer=spec.optimizer,
                       parametrisation=spec.parametrisation, momentum=spec.momentum)
    except NNGPInputError as err:
        raise NNGPInputError(f"{_where(source)} (run {spec.run!r}): {err}") from None
    if spec.optimizer != "gd" and importlib.util.find_spec("optax") is None:
        raise NNGPInputError(f"{_where(source, 'optimizer')} = {spec.optimizer!r} needs optax "
                             "(pip install 'nngp_ppl[train]'); optimizer = \"gd\" needs "
                             "nothing")
    if (spec.optimizer == "gd" and spec.parametrisation == "ntk"
            and getattr(net, "zero_mean", True)):
        _check_stability(net, spec, source)


def _check_stability(net, spec: TrainSpec, source) -> None:
    """Gradient descent on the MSE, linearised (exact as N -> infinity), multiplies the
    residual by 1 - (eta/n) Theta each step: stable only for eta < 2 n / lambda_max."""
    x = np.asarray(spec.x_train)
    lam = float(np.max(np.linalg.eigvalsh(ntk(net, x))))
    bound = 2.0 * len(x) / lam
    if spec.learning_rate >= bound:
        raise NNGPInputError(
            f"{_where(source, 'learning_rate')} = {spec.learning_rate:g} is past the "
            f"stability bound 2 n / lambda_max(NTK on x_train) = {bound:.4g} of gradient "
            f"descent on the mean squared error (n = {len(x)}): the mean would diverge; use "
            f"a smaller learning_rate")


# ---------------------------------------------------------------------------------------------
# the files of the block's stages (nngp_ppl.study.training_stages) and the report's plan entry
# ---------------------------------------------------------------------------------------------
def trained_file(key: str) -> str:
    """The trained correlators of every recorded step."""
    return f"train_{key}.nc"


def comparison_file(key: str) -> str:
    """The connected 1-, 2-, 3-pt functions against the oracle per step."""
    return f"training_{key}.nc"


def flow_file(key: str) -> str:
    """The couplings and the f -> -f verdict per step."""
    return f"training_flow_{key}.nc"


def files(key: str) -> dict:
    return {"trained": trained_file(key), "comparison": comparison_file(key),
            "flow": flow_file(key)}


def trained_run(preset):
    """(run, resolved TrainSpec) of the study's ``[train]`` block, or None (no block, or
    its run left out by ``only``)."""
    spec = getattr(preset, "train", None)
    if spec is None:
        return None
    run = next((r for r in preset.runs() if r.key == spec.run), None)
    return None if run is None else (run, spec.resolved(preset, run))


def plan_entry(preset) -> dict | None:
    """The plan's ``training`` entry (:func:`nngp_ppl.study.spec.plan_dict`)."""
    found = trained_run(preset)
    if found is None:
        return None
    run, spec = found
    return {"key": run.key, "label": run.label, "files": files(run.key),
            "spec": dataclasses.asdict(spec)}
