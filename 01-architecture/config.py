"""Model configuration schema, and the typed-JSON dataclass machinery later stages reuse.

A config is data: one dataclass per concern, fields typed and commented, loaded from JSON and
validated in one place. ``JsonConfig`` is the base: constructing a subclass checks every
field against its annotation (a bool is not an int; an int is accepted where a float is
expected) and then runs its ``validate()``. ``load_dataclass(cls, mapping)`` builds any
dataclass from a JSON-like mapping, rejecting unknown and missing keys; nested dataclass
fields load from nested objects. Every mistake raises ``ConfigError`` naming the key (dotted
for nested fields) and, when it came from a file, the file.

Supported annotations: bool, int, float, str, ``X | None``, ``list[X]``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``dict[str, X]``, ``Literal[...]`` and nested dataclasses.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import types
import typing

from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import UserError


class ConfigError(UserError, ValueError):
    """A configuration mistake; ``key`` is the offending (dotted) key, ``source`` the file."""

    def __init__(self, reason, key=None, source=None):
        self.reason, self.key, self.source = reason, key, source
        message = reason if key is None else f"config key '{key}': {reason}"
        super().__init__(message if source is None else f"{source}: {message}")


def check(condition, key, reason):
    """Raise ``ConfigError(reason, key)`` unless ``condition``; the idiom of ``validate()``."""
    if not condition:
        raise ConfigError(reason, key=key)


# ------------------------------------------------------------------------ type checking

class _Mismatch(Exception):
    """A value that does not fit an annotation; the field-level caller adds the key."""


def _describe(value):
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _type_name(annotation):
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def _coerce(value, annotation, key):
    """``value`` checked against ``annotation``; ints become floats and lists become tuples
    where the annotation asks for them. Raises _Mismatch (or ConfigError for nested keys)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [option for option in args if option is not type(None)]
        if len(options) == 1 and typing.get_origin(options[0]) is not None:
            return _coerce(value, options[0], key)  # list[int] | None: the element's reason is clearer
        for option in options:
            try:
                return _coerce(value, option, key)
            except _Mismatch:
                continue
        raise _Mismatch(f"expected {_type_name(annotation)}, got {_describe(value)}")
    if origin is typing.Literal:
        if any(value == choice and type(value) is type(choice) for choice in args):
            return value
        raise _Mismatch(f"expected one of {list(args)}, got {_describe(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"expected {_type_name(annotation)}, got {_describe(value)}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Mismatch(f"expected {len(args)} elements, got {len(value)}")
            element_types = args
        else:
            element_types = [args[0]] * len(value)
        items = []
        for index, (item, item_type) in enumerate(zip(value, element_types)):
            try:
                items.append(_coerce(item, item_type, f"{key}[{index}]"))
            except _Mismatch as mismatch:
                raise _Mismatch(f"element {index}: {mismatch}") from None
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _Mismatch(f"expected an object with string keys, got {_describe(value)}")
        return {k: _coerce_field(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, dict):
            return load_dataclass(annotation, value, prefix=key)
        raise _Mismatch(f"expected an object ({annotation.__name__}), got {_describe(value)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:  # numpy integers too, stored as int so the config stays JSON-able
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is typing.Any:
        return value
    else:
        raise TypeError(f"config field '{key}': unsupported annotation {_type_name(annotation)}")
    raise _Mismatch(f"expected {_type_name(annotation)}, got {_describe(value)}")


def _coerce_field(value, annotation, key):
    try:
        return _coerce(value, annotation, key)
    except _Mismatch as mismatch:
        raise ConfigError(str(mismatch), key=key) from None


def _init_fields(cls):
    """{name: (field, resolved annotation)} of the fields a dataclass takes in ``__init__``."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _has_default(field):
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def load_dataclass(cls, mapping, prefix=""):
    """An instance of dataclass ``cls`` from a JSON-like mapping, every key and type checked.

    Keys the mapping omits take their defaults; ``prefix`` is the dotted path of a nested
    config, used in error messages.
    """
    def dotted(name):
        return f"{prefix}.{name}" if prefix else name

    if not isinstance(mapping, dict):
        raise ConfigError(f"expected an object, got {_describe(mapping)}", key=prefix or None)
    fields = _init_fields(cls)
    for name in mapping:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            raise ConfigError(f"unknown key{hint}", key=dotted(name))
    for name, (field, _) in fields.items():
        if name not in mapping and not _has_default(field):
            raise ConfigError("missing required key", key=dotted(name))
    values = {name: _coerce_field(value, fields[name][1], dotted(name)) for name, value in mapping.items()}
    try:
        return cls(**values)
    except ConfigError as error:
        if not prefix or error.key is None:
            raise
        raise ConfigError(error.reason, key=dotted(error.key)) from None


# ------------------------------------------------------------------------------ JSON files

def _object_without_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError("duplicate key", key=key)
    return dict(pairs)


def read_json_object(path):
    """The JSON object stored in ``path``; any problem is a ConfigError naming the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", source=path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", source=path) from None
    try:
        data = json.loads(text, object_pairs_hook=_object_without_duplicate_keys)
    except json.JSONDecodeError as error:
        raise ConfigError(f"invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}",
                          source=path) from None
    except ConfigError as error:
        raise ConfigError(error.reason, key=error.key, source=path) from None
    if not isinstance(data, dict):
        raise ConfigError(f"top level must be a JSON object, got {type(data).__name__}", source=path)
    return data


def write_json_atomic(path, obj):
    """Write ``obj`` as JSON so that ``path`` holds either the old file or the complete new one
    (serialised first, so a value JSON cannot hold leaves the old file untouched)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    with atomic_output(os.path.abspath(os.fspath(path)), "w", encoding="utf-8") as file:
        file.write(text)


# ------------------------------------------------------------------------- config base

@dataclasses.dataclass
class JsonConfig:
    """Base of typed, validated, JSON-backed config dataclasses.

    Subclasses (``@dataclasses.dataclass``) declare fields with defaults, may fill derived
    defaults in ``derive_defaults()`` and check values in ``validate()`` with ``check``.
    """

    def __post_init__(self):
        for name, (_, annotation) in _init_fields(type(self)).items():
            setattr(self, name, _coerce_field(getattr(self, name), annotation, name))
        self.derive_defaults()
        self.validate()

    def derive_defaults(self):
        """Replace "automatic" values (None/0 placeholders) by concrete ones."""

    def validate(self):
        """Range and cross-field checks; raise ConfigError naming the key."""

    @classmethod
    def from_dict(cls, mapping):
        return load_dataclass(cls, mapping)

    @classmethod
    def from_json(cls, path):
        try:
            return load_dataclass(cls, read_json_object(path))
        except ConfigError as error:
            if error.source is not None:
                raise
            raise ConfigError(error.reason, key=error.key, source=os.fspath(path)) from None

    def to_dict(self):
        """Plain JSON-able dict (nested configs as dicts); ``from_dict`` inverts it."""
        return dataclasses.asdict(self)

    def to_json(self, path):
        write_json_atomic(path, self.to_dict())


# ---------------------------------------------------------------------------- the model

@dataclasses.dataclass
class ModelConfig(JsonConfig):
    """Shape of an MLoT-Spark model: a GPT-style transformer read segment by segment, with a
    working cache, episodic and semantic memory injected into chosen layers."""

    # --- transformer
    vocab_size: int = 4096          # tokens in the BPE vocabulary (incl. special tokens)
    d_model: int = 256              # residual stream width
    n_layers: int = 4               # transformer blocks
    n_heads: int = 4                # attention heads; d_model must be a multiple
    d_ff: int | None = None         # MLP hidden width; None or 0 means 4 * d_model
    segment_len: int = 128          # working window: tokens processed together per segment
    max_span_len: int = 16          # longest masked span in contextual reconstruction (tokens)
    dropout: float = 0.0            # dropout probability in [0, 1); 0 for small-data runs
    layer_norm_eps: float = 1e-5    # epsilon inside layer norm

    # --- memory cascade (working -> episodic -> semantic)
    working_cache_len: int = 128    # tokens of the previous segment(s) kept as attention cache; 0 disables
    episodic: bool = True           # store chunk summaries of past segments and retrieve them
    episodic_capacity: int = 512    # episodic entries kept before the oldest/least used are evicted
    chunk_len: int = 16             # tokens summarised into one episodic entry
    retrieval_top_k: int = 4        # episodic entries retrieved per segment
    retrieval_continuation: int = 1  # entries written right after a retrieved one, read with it (RETRO's continuation)
    semantic: bool = True           # consolidated long-term slots
    semantic_slots: int = 64        # number of semantic memory slots
    semantic_top_k: int = 4         # semantic slots read per segment
    gnn_rounds: int = 1             # message-passing rounds over the memory graph (0..2)
    memory_layers: list[int] | None = None  # blocks with memory cross-attention; None = upper half
    gate_init: float = 0.0          # initial memory gate (tanh gate: 0 starts as the plain transformer)
    retriever_dim: int = 64         # width of episodic retrieval keys and queries
    copy_head: bool = False         # pointer over the memory tokens mixed into the output (04-model/copy_head.py)
    copy_context: int = 8           # tokens before a copyable token that key it for the pointer (1: its predecessor)
    rope_base: float = 10000.0      # rotary position base (positions are relative, so caches need no re-encoding)

    # --- special token ids the blank-infilling layout needs (from the tokenizer)
    pad_id: int = 0
    mask_id: int = 3
    sop_id: int = 5                 # span start
    eop_id: int = 6                 # span end

    @property
    def head_dim(self):
        return self.d_model // self.n_heads

    def derive_defaults(self):
        if not self.d_ff:
            self.d_ff = 4 * self.d_model
        if self.memory_layers is None:
            self.memory_layers = list(range(self.n_layers // 2, self.n_layers))

    def validate(self):
        for key in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "segment_len",
                    "max_span_len", "episodic_capacity", "chunk_len", "retrieval_top_k",
                    "semantic_slots", "semantic_top_k", "retriever_dim", "copy_context"):
            check(getattr(self, key) > 0, key, f"must be > 0, got {getattr(self, key)}")
        check(self.d_model % self.n_heads == 0, "n_heads",
              f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        check(self.max_span_len <= self.segment_len, "max_span_len",
              f"{self.max_span_len} exceeds segment_len={self.segment_len}")
        check(self.chunk_len <= self.segment_len, "chunk_len",
              f"{self.chunk_len} exceeds segment_len={self.segment_len}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(math.isfinite(self.layer_norm_eps) and self.layer_norm_eps > 0, "layer_norm_eps",
              f"must be a finite number > 0, got {self.layer_norm_eps}")
        check(self.retrieval_continuation >= 0, "retrieval_continuation",
              f"must be >= 0 (0: the retrieved entries only), got {self.retrieval_continuation}")
        check(self.working_cache_len >= 0, "working_cache_len",
              f"must be >= 0 (0 disables), got {self.working_cache_len}")
        check(self.retrieval_top_k <= self.episodic_capacity, "retrieval_top_k",
              f"{self.retrieval_top_k} exceeds episodic_capacity={self.episodic_capacity}")
        check(self.semantic_top_k <= self.semantic_slots, "semantic_top_k",
              f"{self.semantic_top_k} exceeds semantic_slots={self.semantic_slots}")
        check(0 <= self.gnn_rounds <= 2, "gnn_rounds", f"must be 0, 1 or 2, got {self.gnn_rounds}")
        for layer in self.memory_layers:
            check(0 <= layer < self.n_layers, "memory_layers",
                  f"layer index {layer} out of range for n_layers={self.n_layers}")
        check(len(set(self.memory_layers)) == len(self.memory_layers), "memory_layers",
              f"repeated layer index in {self.memory_layers}")
        check(math.isfinite(self.gate_init), "gate_init", f"must be finite, got {self.gate_init}")
        check(self.head_dim % 2 == 0, "n_heads", f"head size d_model/n_heads={self.head_dim} must be even (rotary)")
        check(self.rope_base > 1, "rope_base", f"must be > 1, got {self.rope_base}")
        for key in ("pad_id", "mask_id", "sop_id", "eop_id"):
            check(0 <= getattr(self, key) < self.vocab_size, key,
                  f"{getattr(self, key)} is not a token id of a vocabulary of {self.vocab_size}")
