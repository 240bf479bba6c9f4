"""Linear SVM solver: L2-regularised L1-hinge loss by dual coordinate descent (numpy only).

The problem is liblinear's ``-s 3`` (Hsieh et al., "A dual coordinate descent method for
large-scale linear SVM", ICML 2008), the solver R-CNN and SPP-net train their detectors
with. Each row ``x`` of ``X`` [N, D] is rescaled by ``feature_scale`` and augmented with
the constant ``bias_multiplier`` (liblinear ``-B``), so that the bias is regularised like
any other weight::

    min_w  0.5 * ||w||^2 + sum_i C_i * max(0, 1 - y_i * w . [s * x_i, B])

with ``C_i = C * pos_weight`` for positives and ``C`` for negatives (liblinear ``-w1``).
The dual is ``min_a 0.5 a'Qa - sum(a)`` with ``0 <= a_i <= C_i`` and
``Q_ij = y_i y_j (s^2 x_i . x_j + B^2)``; ``w = sum_i a_i y_i [s * x_i, B]``.

:func:`train_linear_svm` is the fast version. It visits the variables in the same random
order as the plain algorithm but a block of ``block_size`` rows at a time: one
matrix-vector product gives the block's margins, and each one-variable update is carried
to the block's later rows by one product with the rows after it; ``w`` itself is updated
once per block. This is exactly sequential coordinate descent, without a numpy call per
row for the rows that do not move, which after the first epochs are nearly all of them
(well-classified negatives). It keeps liblinear's shrinking and stopping rule (spread of
the projected gradients ``<= tol``) and starts from any feasible dual point (the warm
start after hard-negative mining adds rows). ``X`` may be float16 (converted to float32
block by block, never copied whole and never to float64), but converting costs more than
the products: pass float32 when it fits.

:func:`train_linear_svm_reference` is the plain per-variable algorithm in float64, kept
to test the fast one.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SVMSolution",
    "sample_costs",
    "primal_objective",
    "linear_scores",
    "train_linear_svm",
    "train_linear_svm_reference",
    "LIBLINEAR_TOL",
    "LIBLINEAR_MAX_EPOCHS",
]

log = logging.getLogger(__name__)

# liblinear's default stopping tolerance for the dual solvers (-e 0.1), used by R-CNN
LIBLINEAR_TOL = 0.1
# liblinear's cap on passes over the data
LIBLINEAR_MAX_EPOCHS = 1000
# rows per block: a larger block means fewer numpy calls per epoch, but each update is
# carried to up to block_size - 1 later rows; measured on 20,000 x 12,800 rows (2 shared
# cores), 8 to 32 take 1.0-1.7 s per solve, while from 64 on the products grow large
# enough for BLAS to go multi-threaded and a solve took 3-40 s under load
DEFAULT_BLOCK_SIZE = 16
# rows per chunk when a whole-matrix product is needed (bounds the float32 copy)
_CHUNK_ROWS = 4096
# liblinear skips updates whose projected gradient is below this
_PG_EPSILON = 1e-12


@dataclass
class SVMSolution:
    """A trained linear SVM, expressed on the UNscaled features.

    ``score(x) = x @ weights + bias`` for x [D] as passed in (before ``feature_scale``).
    """

    weights: np.ndarray  # float32 [D]: feature_scale * w
    bias: float  # bias_multiplier * w_bias
    alpha: np.ndarray  # float64 [N]: dual variables, 0 <= alpha_i <= C_i
    scores: np.ndarray  # float64 [N]: the training rows' scores under the returned model
    objective: float  # primal objective (module docstring) of the returned model
    epochs: int  # passes over the (active) variables
    converged: bool  # stopping rule met before max_epochs


def _check_problem(X, y) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D array, got {type(X).__name__} {getattr(X, 'shape', '')}")
    if X.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"X must be float16/32/64, got {X.dtype}")
    y = np.asarray(y)
    if y.shape != (len(X),):
        raise ValueError(f"y must have shape ({len(X)},), got {y.shape}")
    if y.size and not np.all((y == 1) | (y == -1)):
        raise ValueError("labels y must be +1 or -1")
    return X, y.astype(np.float64)


def sample_costs(y, C: float, pos_weight: float = 1.0) -> np.ndarray:
    """Per-row loss weight ``C_i`` [N] float64: ``C * pos_weight`` for y = +1, ``C`` else."""
    y = np.asarray(y)
    return np.where(y > 0, C * pos_weight, C).astype(np.float64)


def linear_scores(X: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """``X @ weights + bias`` [N] float64 for X [N, D] of any float dtype, in float32
    chunks (no float64 copy of X)."""
    w32 = np.asarray(weights, dtype=np.float32)
    out = np.empty(len(X), dtype=np.float64)
    for start in range(0, len(X), _CHUNK_ROWS):
        chunk = np.asarray(X[start : start + _CHUNK_ROWS], dtype=np.float32)
        out[start : start + len(chunk)] = chunk @ w32
    return out + float(bias)


def primal_objective(
    X: np.ndarray,
    y,
    weights: np.ndarray,
    bias: float,
    C: float,
    pos_weight: float = 1.0,
    bias_multiplier: float = 1.0,
    feature_scale: float = 1.0,
) -> float:
    """Primal objective of a model given on the unscaled features (``score = x @ weights +
    bias``), i.e. with ``w = weights / feature_scale`` and ``w_bias = bias /
    bias_multiplier``: ``0.5 (||w||^2 + w_bias^2) + sum_i C_i max(0, 1 - y_i score_i)``."""
    X, y = _check_problem(X, y)
    w = np.asarray(weights, dtype=np.float64) / feature_scale
    reg = 0.5 * (float(w @ w) + (float(bias) / bias_multiplier) ** 2)
    hinge = np.maximum(0.0, 1.0 - y * linear_scores(X, weights, bias))
    return reg + float(sample_costs(y, C, pos_weight) @ hinge)


def _primal_from_dual(X, y, alpha, feature_scale, bias_multiplier) -> tuple[np.ndarray, float]:
    """``w = s * X' (alpha * y)`` [D] float64 and ``w_bias = B * sum(alpha * y)``."""
    coef = alpha * y
    w = np.zeros(X.shape[1], dtype=np.float64)
    for start in range(0, len(X), _CHUNK_ROWS):
        nz = np.flatnonzero(coef[start : start + _CHUNK_ROWS])
        if nz.size:
            chunk = np.asarray(X[start + nz], dtype=np.float32)
            w += chunk.T @ coef[start + nz].astype(np.float32)
    return w * feature_scale, bias_multiplier * float(coef.sum())


def _solution(X, y, alpha, w, wb, C, pos_weight, bias_multiplier, feature_scale, epochs, converged):
    weights = (w * feature_scale).astype(np.float32)
    bias = float(wb * bias_multiplier)
    scores = linear_scores(X, weights, bias)
    hinge = np.maximum(0.0, 1.0 - y * scores)
    objective = 0.5 * (float(w @ w) + wb * wb) + float(sample_costs(y, C, pos_weight) @ hinge)
    return SVMSolution(weights, bias, alpha, scores, objective, epochs, converged)


def _initial_alpha(alpha_init, upper) -> np.ndarray:
    if alpha_init is None:
        return np.zeros(len(upper), dtype=np.float64)
    alpha = np.asarray(alpha_init, dtype=np.float64).copy()
    if alpha.shape != upper.shape:
        raise ValueError(f"alpha_init must have shape {upper.shape}, got {alpha.shape}")
    # a warm start must be dual-feasible: clip to the box constraints
    return np.clip(alpha, 0.0, upper)


def train_linear_svm(
    X: np.ndarray,
    y,
    C: float,
    pos_weight: float = 1.0,
    bias_multiplier: float = 1.0,
    feature_scale: float = 1.0,
    tol: float = LIBLINEAR_TOL,
    max_epochs: int = LIBLINEAR_MAX_EPOCHS,
    alpha_init: np.ndarray | None = None,
    shrinking: bool = True,
    block_size: int = DEFAULT_BLOCK_SIZE,
    seed: int = 0,
) -> SVMSolution:
    """Solve the L1-hinge SVM of the module docstring by blocked dual coordinate descent.

    Args:
        X: [N, D] float16/float32/float64 features, unscaled (never copied whole).
        y: [N] labels in {+1, -1}.
        C, pos_weight, bias_multiplier, feature_scale: see the module docstring.
        tol: stop when the projected gradients' spread is ``<= tol`` (liblinear ``-e``).
        max_epochs: cap on passes over the variables.
        alpha_init: [N] warm start (clipped into ``[0, C_i]``); None: zeros.
        shrinking: drop variables stuck at a bound from the passes (liblinear's rule);
            before stopping, every variable is checked again.
        block_size: rows per block (1 gives the plain algorithm).
        seed: seeds the per-epoch random order.

    Returns:
        :class:`SVMSolution` with weights/bias for the unscaled features.
    """
    X, y = _check_problem(X, y)
    n = len(X)
    s, B = float(feature_scale), float(bias_multiplier)
    upper = sample_costs(y, C, pos_weight)
    alpha = _initial_alpha(alpha_init, upper)
    w, wb = _primal_from_dual(X, y, alpha, s, B)  # w acts on the scaled features s * x
    w32 = w.astype(np.float32)
    rng = np.random.default_rng(seed)
    active = np.arange(n)
    pg_max_old, pg_min_old = math.inf, -math.inf
    epochs, converged = 0, n == 0
    s2, B2 = s * s, B * B
    while not converged and epochs < max_epochs:
        epochs += 1
        perm = active[rng.permutation(len(active))]
        pg_max_new, pg_min_new = -math.inf, math.inf
        shrunk = np.zeros(n, dtype=bool)
        for start in range(0, len(perm), block_size):
            idx = perm[start : start + block_size]
            xb = np.asarray(X[idx], dtype=np.float32)
            margins = (xb @ w32).astype(np.float64) * s + B * wb
            qd = (np.einsum("ij,ij->i", xb, xb).astype(np.float64) * s2 + B2).tolist()
            yb, ub, ab = y[idx].tolist(), upper[idx].tolist(), alpha[idx].tolist()
            coef = np.zeros(len(idx), dtype=np.float64)
            changed = False
            for j in range(len(idx)):
                yj, aj = yb[j], ab[j]
                g = yj * float(margins[j]) - 1.0
                pg = 0.0
                if aj == 0.0:
                    if g > pg_max_old and shrinking:
                        shrunk[idx[j]] = True
                        continue
                    if g < 0.0:
                        pg = g
                elif aj == ub[j]:
                    if g < pg_min_old and shrinking:
                        shrunk[idx[j]] = True
                        continue
                    if g > 0.0:
                        pg = g
                else:
                    pg = g
                if pg > pg_max_new:
                    pg_max_new = pg
                if pg < pg_min_new:
                    pg_min_new = pg
                if abs(pg) > _PG_EPSILON:
                    a_new = min(max(aj - g / qd[j], 0.0), ub[j])
                    d = (a_new - aj) * yj
                    if d != 0.0:
                        ab[j] = a_new
                        coef[j] = d
                        changed = True
                        if j + 1 < len(idx):
                            # carry the update to the block's later rows (w itself waits)
                            margins[j + 1 :] += d * ((xb[j + 1 :] @ xb[j]).astype(np.float64) * s2 + B2)
            if changed:
                alpha[idx] = ab
                moved = np.flatnonzero(coef)
                w += s * (xb[moved].T @ coef[moved].astype(np.float32))
                wb += B * float(coef.sum())
                w32 = w.astype(np.float32)
        active = active[~shrunk[active]]
        if pg_max_new - pg_min_new <= tol:
            if len(active) == n:
                converged = True
                break
            # converged on the shrunk problem: check every variable again (liblinear)
            active = np.arange(n)
            pg_max_old, pg_min_old = math.inf, -math.inf
            continue
        pg_max_old = pg_max_new if pg_max_new > 0 else math.inf
        pg_min_old = pg_min_new if pg_min_new < 0 else -math.inf
    if not converged:
        log.warning("SVM solver stopped after %d epochs without reaching tol=%g", epochs, tol)
    # the incrementally updated w drifts by float32 rounding; recompute it from the duals
    w_fresh, wb_fresh = _primal_from_dual(X, y, alpha, s, B)
    scale = max(1.0, float(np.abs(w_fresh).max(initial=0.0)))
    assert np.abs(w - w_fresh).max(initial=0.0) <= 1e-3 * scale, "SVM primal drifted from its duals"
    return _solution(X, y, alpha, w_fresh, wb_fresh, C, pos_weight, B, s, epochs, converged)


def train_linear_svm_reference(
    X: np.ndarray,
    y,
    C: float,
    pos_weight: float = 1.0,
    bias_multiplier: float = 1.0,
    feature_scale: float = 1.0,
    tol: float = LIBLINEAR_TOL,
    max_epochs: int = LIBLINEAR_MAX_EPOCHS,
    alpha_init: np.ndarray | None = None,
    seed: int = 0,
) -> SVMSolution:
    """Plain dual coordinate descent, one variable at a time, float64, no shrinking (slow).

    Visits the variables in the same order as :func:`train_linear_svm` with
    ``shrinking=False``, so both reach the same duals up to rounding.
    """
    X, y = _check_problem(X, y)
    n = len(X)
    upper = sample_costs(y, C, pos_weight)
    alpha = _initial_alpha(alpha_init, upper)
    Z = np.hstack([np.asarray(X, np.float64) * feature_scale, np.full((n, 1), float(bias_multiplier))])
    w = Z.T @ (alpha * y)
    rng = np.random.default_rng(seed)
    epochs, converged = 0, n == 0
    while not converged and epochs < max_epochs:
        epochs += 1
        pg_max, pg_min = -math.inf, math.inf
        for i in rng.permutation(n):
            g = y[i] * (Z[i] @ w) - 1.0
            if alpha[i] == 0.0:
                pg = min(g, 0.0)
            elif alpha[i] == upper[i]:
                pg = max(g, 0.0)
            else:
                pg = g
            pg_max, pg_min = max(pg_max, pg), min(pg_min, pg)
            if abs(pg) > _PG_EPSILON:
                a_new = min(max(alpha[i] - g / (Z[i] @ Z[i]), 0.0), upper[i])
                w += (a_new - alpha[i]) * y[i] * Z[i]
                alpha[i] = a_new
        converged = pg_max - pg_min <= tol
    # w lives in the augmented space: its last entry multiplies the bias feature B
    return _solution(X, y, alpha, w[:-1], float(w[-1]), C, pos_weight, bias_multiplier,
                     feature_scale, epochs, converged)
