"""Host-side data: text sources, tokenizers, packing to disk, and the grain input pipeline."""

from mlmjax.data import corpora
from mlmjax.data import pipeline
from mlmjax.data import prepare
from mlmjax.data import tokenizer
