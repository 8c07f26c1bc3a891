"""Full-ranking metrics and the evaluator (splits, warm/cold, popularity groups, throughput)."""

from benchmarks.evaluation.evaluator import EvalConfig, EvalResult, Evaluator, user_batch
from benchmarks.evaluation.metrics import pad_targets, recall_ndcg

__all__ = ["EvalConfig", "EvalResult", "Evaluator", "pad_targets", "recall_ndcg", "user_batch"]
