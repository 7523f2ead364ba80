"""Text of a token stream as the tokens come, without printing half a character.

A byte-level BPE token may end inside a multi-byte UTF-8 character (an emoji is often four byte
tokens). Decoding each token alone would print U+FFFD for every piece; instead the bytes go
through an incremental UTF-8 decoder that holds back an incomplete character until its last
byte arrives. Bytes that can never form a character become U+FFFD, as `Tokenizer.decode` does,
so the concatenated pieces equal the decode of the whole sequence.
"""
from __future__ import annotations

import codecs


class TextStream:
    """push(token) -> the text completed by that token ("" while a character is incomplete);
    finish() -> whatever is left (an incomplete character at the end becomes U+FFFD)."""

    def __init__(self, tokenizer, skip_special: bool = False):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.decode_bytes([token_id], self.skip_special))

    def push_all(self, token_ids) -> str:
        return self._decoder.decode(self.tokenizer.decode_bytes(token_ids, self.skip_special))

    def finish(self) -> str:
        return self._decoder.decode(b"", final=True)
