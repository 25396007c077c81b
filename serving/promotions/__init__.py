"""``/v1/aliases/{name}/promotions``: evaluation-gated promotion of a candidate version onto an alias."""

from serving.promotions.protocol import PromotionCreate, PromotionPublic
from serving.promotions.service import PromotionService

__all__ = ["PromotionCreate", "PromotionPublic", "PromotionService"]
