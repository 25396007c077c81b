"""Fine-tuning the retrieval models: a cross-encoder reranker and the bi-encoder embedder, on BEIR judgements."""
