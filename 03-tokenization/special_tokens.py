"""The special tokens every MLoT tokenizer reserves, in id order, and the attribute name of each.

They take ids 0..8 (before the 256 byte tokens) so that every later stage can rely on them:
<pad> fills batches, <bos>/<eos> frame documents, [MASK]/[SEP] serve masked reconstruction,
[SOP]/[EOP] open and close an infilled span (blank infilling), [USER]/[MODEL] mark chat turns.
"""

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "[MASK]", "[SEP]", "[SOP]", "[EOP]", "[USER]", "[MODEL]"]

# Tokenizer attribute -> token string; the attribute is None when a loaded tokenizer lacks it.
SPECIAL_TOKEN_ATTRIBUTES = {
    "pad_id": "<pad>",
    "bos_id": "<bos>",
    "eos_id": "<eos>",
    "mask_id": "[MASK]",
    "sep_id": "[SEP]",
    "sop_id": "[SOP]",
    "eop_id": "[EOP]",
    "user_id": "[USER]",
    "model_id": "[MODEL]",
}
