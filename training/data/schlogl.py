"""The Schlögl model (docs/science.md §4): an exact Gillespie SSA, vectorised over trajectories.

Reactions A + 2X ⇌ 3X (k1, k2) and B ⇌ X (k3, k4) with reservoirs A, B held fixed;
propensities a1 = (k1/2) A X(X-1), a2 = (k2/6) X(X-1)(X-2), a3 = k3 B, a4 = k4 X.
Parameters: Gillespie's standard set [source]. Observation times t = 0.1, 0.2, …, 5.0 [ours].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["SchloglParams", "Trajectories", "simulate", "birth_death", "OBSERVATION_TIMES"]

OBSERVATION_TIMES = np.round(np.arange(1, 51) * 0.1, 10)


@dataclass(frozen=True)
class SchloglParams:
    k1: float = 3e-7
    k2: float = 1e-4
    k3: float = 1e-3
    k4: float = 3.5
    A: float = 1e5
    B: float = 2e5
    x0: int = 250


class Trajectories(NamedTuple):
    """times ``(T,)``; states ``(n_trajectories, T)``: the copy number at each observation time."""

    times: np.ndarray
    states: np.ndarray


def _ssa(
    propensities, changes: np.ndarray, x0: int, n: int, times: np.ndarray, seed: int
) -> Trajectories:
    """Exact SSA for all trajectories at once: each iteration fires one reaction in every
    trajectory that has not passed the last observation time. The state at time t is the state
    after the last event before t."""
    if n < 1:
        raise ValueError(f"n_trajectories must be >= 1, got {n}.")
    if np.any(np.diff(times) <= 0) or times[0] <= 0:
        raise ValueError("observation times must be positive and increasing.")
    rng = np.random.default_rng(seed)
    x = np.full(n, x0, dtype=np.int64)
    t = np.zeros(n)
    states = np.empty((n, times.size), dtype=np.int64)
    next_obs = np.zeros(n, dtype=np.int64)  # index of the next observation time per trajectory
    active = np.arange(n)
    while active.size:
        a = propensities(x[active].astype(np.float64))  # (m, R)
        total = a.sum(axis=1)
        dt = np.where(
            total > 0, rng.exponential(1.0, active.size) / np.maximum(total, 1e-300), np.inf
        )
        t_new = t[active] + dt
        # Record the observation times this event jumps over: the state there is the one
        # before the event (an event can jump over several, hence the loop).
        while True:
            nxt = next_obs[active]
            hit = (nxt < times.size) & (t_new > times[np.minimum(nxt, times.size - 1)])
            if not hit.any():
                break
            rows = active[hit]
            states[rows, next_obs[rows]] = x[rows]
            next_obs[rows] += 1
        u = rng.random(active.size) * total
        reaction = (np.cumsum(a, axis=1) < u[:, None]).sum(axis=1)
        reaction = np.minimum(reaction, changes.size - 1)
        x[active] += np.where(np.isfinite(dt), changes[reaction], 0)
        t[active] = t_new
        active = active[next_obs[active] < times.size]
    return Trajectories(times.copy(), states)


def simulate(
    n_trajectories: int = 200,
    *,
    seed: int = 0,
    params: SchloglParams = SchloglParams(),
    times: np.ndarray = OBSERVATION_TIMES,
) -> Trajectories:
    """``n_trajectories`` exact SSA trajectories of the Schlögl model observed at ``times``."""
    p = params

    def propensities(x):
        return np.stack(
            [
                p.k1 / 2 * p.A * x * (x - 1),
                p.k2 / 6 * x * (x - 1) * (x - 2),
                np.full_like(x, p.k3 * p.B),
                p.k4 * x,
            ],
            axis=1,
        )

    return _ssa(
        propensities, np.array([1, -1, 1, -1]), p.x0, n_trajectories, np.asarray(times, float), seed
    )


def birth_death(
    birth: float, death: float, x0: int, n_trajectories: int, times, *, seed: int = 0
) -> Trajectories:
    """∅ → X at rate ``birth``, X → ∅ at rate ``death·X``: exactly solvable (the test model).

    Mean and variance: m(t) = x0 e^{-δt} + (β/δ)(1 - e^{-δt}),
    var(t) = x0 e^{-δt}(1 - e^{-δt}) + (β/δ)(1 - e^{-δt}).
    """

    def propensities(x):
        return np.stack([np.full_like(x, birth), death * x], axis=1)

    return _ssa(propensities, np.array([1, -1]), x0, n_trajectories, np.asarray(times, float), seed)
