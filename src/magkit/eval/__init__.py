"""Evaluation protocol (repeated runs, mean ± std) and results files."""

from .protocol import RepeatResult, RunResult, mean_std, repeat

__all__ = ["RepeatResult", "RunResult", "mean_std", "repeat"]
