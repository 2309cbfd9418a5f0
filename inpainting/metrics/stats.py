"""Percentile-bootstrap confidence intervals for per-image metrics (numpy, seeded).

`bootstrap_ci` gives an interval for a mean; `paired_bootstrap_ci` gives one for the mean
difference between two conditions measured on the same images (e.g. a model with the
true caption vs with a shuffled caption), resampling images jointly so that the pairing
is kept. Resampling is vectorised in blocks of bootstrap replicates to bound memory.
"""

from __future__ import annotations

import dataclasses

import numpy as np

NUM_RESAMPLES = 10_000
CONFIDENCE = 0.95
_BLOCK_ELEMENTS = 4_000_000  # Index matrix elements per block (32 MB of int64).


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate and its confidence interval."""

  mean: float
  low: float
  high: float
  confidence: float = CONFIDENCE

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)

  def __str__(self) -> str:
    return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _resampled_means(
  values: np.ndarray, num_resamples: int, rng: np.random.Generator
) -> np.ndarray:
  """Means of `num_resamples` with-replacement resamples of `values`, [num_resamples]."""
  n = len(values)
  block = max(1, _BLOCK_ELEMENTS // n)
  means = []
  for start in range(0, num_resamples, block):
    count = min(block, num_resamples - start)
    index = rng.integers(0, n, size=(count, n))
    means.append(values[index].mean(axis=1))
  return np.concatenate(means)


def bootstrap_ci(
  values,
  confidence: float = CONFIDENCE,
  num_resamples: int = NUM_RESAMPLES,
  seed: int = 0,
) -> Interval:
  """Percentile-bootstrap interval for the mean of per-image values.

  Args:
    values: [N] finite per-image values (clip PSNR's +inf first).
    confidence: coverage, e.g. 0.95.
    num_resamples: bootstrap replicates.
    seed: the resampling seed, so reports are reproducible.

  Returns:
    Interval(mean of the values, lower and upper percentiles of the resampled means).
  """
  values = np.asarray(values, np.float64).reshape(-1)
  if len(values) == 0:
    raise ValueError("bootstrap_ci needs at least one value")
  if not np.all(np.isfinite(values)):
    raise ValueError("bootstrap_ci needs finite values (clip +inf PSNR first)")
  means = _resampled_means(values, num_resamples, np.random.default_rng(seed))
  tail = 100.0 * (1.0 - confidence) / 2.0
  low, high = np.percentile(means, [tail, 100.0 - tail])
  return Interval(float(values.mean()), float(low), float(high), confidence)


def paired_bootstrap_ci(
  values_a,
  values_b,
  confidence: float = CONFIDENCE,
  num_resamples: int = NUM_RESAMPLES,
  seed: int = 0,
) -> Interval:
  """Interval for mean(values_a - values_b) over the same images.

  Args:
    values_a: [N] per-image metric under condition A.
    values_b: [N] the same images under condition B.

  Returns:
    Interval of the mean paired difference A - B; it excludes 0 when the conditions
    differ at this confidence.
  """
  a = np.asarray(values_a, np.float64).reshape(-1)
  b = np.asarray(values_b, np.float64).reshape(-1)
  if a.shape != b.shape:
    raise ValueError(f"paired values need one length, got {a.shape} and {b.shape}")
  return bootstrap_ci(a - b, confidence, num_resamples, seed)
