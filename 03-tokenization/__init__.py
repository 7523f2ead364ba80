"""03-tokenization: byte-level BPE trained from scratch, corpus -> tokenized_data/, and the default synthetic corpus."""
from mlot.tokenization.special_tokens import SPECIAL_TOKENS
from mlot.tokenization.tokenizer import Tokenizer
from mlot.tokenization.trainer import train

__all__ = ["SPECIAL_TOKENS", "Tokenizer", "train"]
