"""all-MiniLM-L6-v2 from the model store embeds with the right size and a sensible similarity order."""

from __future__ import annotations

from pathlib import Path

from sentence_transformers import SentenceTransformer


def test_minilm_dimension_and_similarity_order(embedding_model_path: Path) -> None:
    model = SentenceTransformer(str(embedding_model_path), device="cpu")
    assert model.get_embedding_dimension() == 384
    query, close, far = model.encode(
        [
            "How do vaccines train the immune system?",
            "Vaccination exposes the immune system to an antigen so it learns to respond.",
            "The stock market closed higher on Friday after strong earnings.",
        ],
        normalize_embeddings=True,
    )
    assert query.shape == (384,)
    assert float(query @ close) > float(query @ far) + 0.2
