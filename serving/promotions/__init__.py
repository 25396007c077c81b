"""``/v1/aliases/{name}/promotions``: evaluation-gated promotion of a candidate version onto an alias."""

from serving.promotions.protocol import PromotionCreate, PromotionPublic, SoakWatch
from serving.promotions.service import PromotionService, soak_verdict

__all__ = ["PromotionCreate", "PromotionPublic", "PromotionService", "SoakWatch", "soak_verdict"]
