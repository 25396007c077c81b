"""One lock around every Hugging Face model load in the process.

transformers' ``from_pretrained`` swaps class attributes while it loads (``initialization.no_tie_weights`` sets
``PreTrainedModel.tie_weights`` to a no-op, ``no_init_weights`` does the same to the init functions) and puts the
saved ones back afterwards. Two loads in two threads at once interleave those swaps, and the second load can put
back the *no-op* it saved: from then on no model loaded in that process ties its weights, so a causal LM's
``lm_head`` stays on the meta device (garbage answers, "Cannot copy out of meta tensor" when training). Four
sentence-transformers loads in four threads break it on the first try here (transformers 5.19; upstream:
huggingface/transformers#44940). A gateway loads embedders, rerankers and the evaluation embeddings from several
threads, so every load in ragswap goes through :func:`model_loading`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["model_loading"]

_LOCK = threading.RLock()  # re-entrant: a loader may call another (a CrossEncoder builds its transformer)


@contextmanager
def model_loading() -> Iterator[None]:
    """Hold the process-wide model-loading lock for a ``from_pretrained`` / ``SentenceTransformer(...)`` call.

    Example:
        >>> with model_loading():
        ...     model = SentenceTransformer(path, device="cpu")
    """
    with _LOCK:
        yield
