"""The leave-one-out advantage of RIPT (and RLOO): each rollout is judged against its siblings.

For a group of K rollouts of one context, A_k = R_k - mean(R_j, j != k). No critic and no
value function: the other K - 1 rollouts of the same context are the baseline. Episodes
without a label (the operator has not answered yet) are left out of the baseline and get
no advantage; a group with fewer than two labeled rollouts carries no signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def leave_one_out_advantage(rewards: Sequence[float | None]) -> np.ndarray:
    """Advantages (K,) for one group; unlabeled entries (None or NaN) get 0.0.

    >>> leave_one_out_advantage([1.0, 0.0]).tolist()
    [1.0, -1.0]
    """
    r = np.array([np.nan if x is None else float(x) for x in rewards], dtype=np.float64)
    labeled = ~np.isnan(r)
    n = int(labeled.sum())
    advantages = np.zeros_like(r)
    if n < 2:
        return advantages
    total = r[labeled].sum()
    advantages[labeled] = r[labeled] - (total - r[labeled]) / (n - 1)
    return advantages


def is_informative(rewards: Sequence[float | None]) -> bool:
    """True when the labeled rewards of a group disagree, so its advantages are not all zero."""
    labeled = {float(x) for x in rewards if x is not None and not np.isnan(x)}
    return len(labeled) > 1
