"""``/v1/evaluations``: evaluation runs as persistent background jobs of the gateway."""

from serving.evaluations.protocol import EvaluationCreate, EvaluationPublic, EvaluationResults
from serving.evaluations.service import EvaluationService

__all__ = ["EvaluationCreate", "EvaluationPublic", "EvaluationResults", "EvaluationService"]
