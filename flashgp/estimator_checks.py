# Checks the scikit-learn estimators (GPRegressor, GPClassifier) share: numeric pandas columns
# and the seed drawn from a random_state.
from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state


def check_numeric_columns(X) -> None:
    """A pandas DataFrame X must hold numbers only: name the columns that do not convert."""
    if not (hasattr(X, "columns") and hasattr(X, "dtypes")):
        return
    bad = []
    for column, dtype in X.dtypes.items():
        if getattr(dtype, "kind", "O") in "biuf":
            continue
        try:
            np.asarray(X[column], dtype=np.float64)
        except (TypeError, ValueError):
            bad.append(str(column))
    if bad:
        raise ValueError(f"X: expected numeric columns, got non-numeric column(s) "
                         f"{', '.join(map(repr, bad[:5]))}; encode them as numbers first")


def seed_from(random_state, name: str) -> int:
    """An int seed drawn from ``random_state`` (None, int or numpy RandomState)."""
    try:
        state = check_random_state(random_state)
    except ValueError:
        raise ValueError(f"{name}: expected None, an int or a numpy RandomState, "
                         f"got {random_state!r}") from None
    return int(state.randint(np.iinfo(np.int32).max))
