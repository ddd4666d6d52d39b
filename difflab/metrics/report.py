"""The result of one evaluation: every metric with its uncertainty, and what it was measured on."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricsReport:
    """FID with a bootstrap interval, KID mean +- std, IS mean +- std, precision and recall.

    fid_interval: (low, high) bootstrap interval at fid_level (re-centred on the estimate, see
    fid.fid_bootstrap_interval), from fid_resamples resamples.
    kid_*: over kid_subsets subsets of kid_subset_size images; is_*: over is_splits splits.
    extractor_info: what the feature extractor is (e.g. the built-in classifier's test accuracy).
    """

    extractor: str
    reference: str
    n_generated: int
    n_reference: int
    fid: float
    fid_interval: tuple[float, float]
    fid_level: float
    fid_resamples: int
    kid_mean: float
    kid_std: float
    kid_subsets: int
    kid_subset_size: int
    is_mean: float
    is_std: float
    is_splits: int
    precision: float
    recall: float
    pr_k: int
    extractor_info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (the interval as a list)."""
        values = asdict(self)
        values["fid_interval"] = list(self.fid_interval)
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def table(self) -> str:
        """A fixed-width table of the metrics, headed by what was compared with what."""
        low, high = self.fid_interval
        rows = [
            ("FID", f"{self.fid:.4f}", f"{self.fid_level:.0%} CI [{low:.4f}, {high:.4f}] ({self.fid_resamples} "
                                        "bootstrap resamples)"),
            ("KID", f"{self.kid_mean:.5f}", f"+- {self.kid_std:.5f} ({self.kid_subsets} subsets of "
                                            f"{self.kid_subset_size})"),
            ("IS", f"{self.is_mean:.4f}", f"+- {self.is_std:.4f} ({self.is_splits} splits)"),
            ("precision", f"{self.precision:.4f}", f"k = {self.pr_k}"),
            ("recall", f"{self.recall:.4f}", f"k = {self.pr_k}"),
        ]
        about = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in self.extractor_info.items() if k in ("kind", "test_accuracy", "weights"))
        head = [f"{self.n_generated} generated vs {self.n_reference} reference images ({self.reference})",
                f"features: {self.extractor}" + (f" ({about})" if about else "")]
        width = max(len(r[1]) for r in rows)
        return "\n".join(head + [f"  {name:<10} {value:>{width}}  {note}" for name, value, note in rows])

    def __str__(self) -> str:
        return self.table()
