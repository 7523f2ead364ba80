"""The checkpoint file format: a ZIP of .npy arrays plus manifest.json — compressed, incremental
(a file may inherit arrays from its parent), written atomically, verified on load. Training
(05-training/checkpointing.py manages a run's files), evaluation and chat read and write it alike.

The training stage hands over plain data: ``arrays`` (a flat ``{name: np.ndarray}``: parameters,
optimizer moments, memory state, RNG states) and ``meta`` (a JSON-able dict: config, curriculum,
schedulers, data position, metrics). Nothing here knows about models.

File format 2 (``*.pt``; any ZIP tool can list it, numpy can read each member):

- ``arrays/00000.npy`` … one member per array *stored in this file*, written with
  ``allow_pickle=False``. Arrays whose data barely compresses (dense float weights: deflate saves
  ~7 % at a few tens of MB/s) are stored as-is; the rest (zeros, sparse memory slots, counters)
  are deflated.
- ``manifest.json``: ``format`` ("mlot-checkpoint"), ``format_version`` (2), ``step`` (int or
  null), ``parent`` (file name of the parent checkpoint in the same directory, or null), ``meta``
  (the caller's dict, verbatim; NaN/Infinity allowed; tuples come back as lists) and ``arrays``:
  for *every* array of the state, ``{"dtype": "<f4", "shape": [..], "sha256": hex, "member":
  "arrays/00003.npy" or null}``. A null member means "unchanged since the parent": the array is
  read from the nearest checkpoint up the parent chain that stores it, and must carry the same
  SHA-256 there. ``sha256`` is the SHA-256 of the array's elements in C order (its raw bytes);
  dtype and shape are checked beside it.

Loading refuses, with a ``CheckpointError`` naming the file and the fault: a file that is not a
complete ZIP, a member not listed in the manifest (a pickle smuggled in as ``data.pkl``), a
listed member that is missing, a member that is not a plain ``.npy`` of a bool/int/uint/float/
complex dtype (object arrays are refused from the header, before any byte of data is read, so a
pickle payload never runs), a header or SHA-256 that disagrees with the manifest, truncated or
trailing data, a parent that is missing or does not hold what its child inherits, and a newer
format version. Older versions are migrated on read (``_MIGRATIONS``).

Format 1 (history, still read): manifest keys ``version`` (1), ``step``, ``config``,
``training_state``, ``parent_checkpoint`` and ``sha256`` (``{name: hex}``, same definition);
arrays stored as members ``<name>.npy``; an array listed without a member is inherited from the
parent. It had no per-array dtype/shape; migration maps ``meta = training_state + {"config":
config}`` and leaves dtype/shape unrecorded (checked against the .npy header only).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import numbers
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mlot.architecture.atomic import atomic_output
from mlot.architecture.cli import UserError

FORMAT_NAME = "mlot-checkpoint"
FORMAT_VERSION = 2
MANIFEST_MEMBER = "manifest.json"

_ALLOWED_KINDS = "biufc"  # bool, signed, unsigned, float, complex: nothing that needs pickle
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # same state, same bytes
_DEFLATE_LEVEL = 1
_DEFLATE_SAMPLE_BYTES = 4096
_DEFLATE_WORTH_RATIO = 0.9
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# What damaged bytes can make zipfile, zlib, json and the .npy header parser raise.
_DAMAGE = (OSError, EOFError, ValueError, NotImplementedError, OverflowError, RecursionError,
           zipfile.BadZipFile, zlib.error, struct.error)


class CheckpointError(UserError):
    """A checkpoint that cannot be written or trusted; the message names the file and the fault."""


class CheckpointRecoveryWarning(UserWarning):
    """``load_latest`` skipped damaged checkpoints; the one-line message names them and the one used."""


class Checkpoint(NamedTuple):
    """A loaded, verified state: what ``save`` was given, plus where it came from."""
    arrays: dict   # {name: np.ndarray}, writable, in the order they were saved
    meta: dict     # the JSON-able dict given to save
    step: int | None
    path: Path     # the file that was loaded (e.g. latest_checkpoint.pt)


class _Description(NamedTuple):
    """What an array is, wherever it is stored; equal descriptions mean "unchanged"."""
    dtype: str | None          # e.g. "<f4"; None when the file did not record it (format 1)
    shape: tuple | None
    sha256: str


class IncrementalBase(NamedTuple):
    """The checkpoint the next incremental save is written against."""
    name: str                   # ckpt_<step>.pt in the manager's directory
    descriptions: dict
    depth: int                  # incremental saves since the last full one (0: it is full)


# ---------------------------------------------------------------------------------- hashing

def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of the array's elements in C order, i.e. of its raw bytes (not of the .npy file,
    so the same values hash the same whether they were stored in C or Fortran order)."""
    return hashlib.sha256(np.ascontiguousarray(array)).hexdigest()


def describe_arrays(arrays) -> dict:
    """{name: _Description} for a state about to be saved; refuses what the format cannot hold."""
    if not isinstance(arrays, dict):
        raise CheckpointError(f"arrays must be a dict of numpy arrays, got {type(arrays).__name__}")
    descriptions = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"array name {name!r}: must be a non-empty string")
        if not isinstance(array, np.ndarray):
            raise CheckpointError(f"array {name!r}: expected a numpy array, got {type(array).__name__}")
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise CheckpointError(f"array {name!r}: dtype {array.dtype} cannot be saved "
                                  "(bool, integer, float and complex only; no pickled objects)")
        descriptions[name] = _Description(array.dtype.str, array.shape, array_sha256(array))
    return descriptions


def _check_json(value, where: str) -> None:
    """Refuse what JSON would not give back as it was: non-string keys, numpy scalars, objects."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where}: key {key!r} is not a string (JSON keys are strings)")
            _check_json(item, f"{where}[{key!r}]")
    else:
        raise CheckpointError(f"{where} holds a {type(value).__name__}, which JSON cannot store "
                              "(convert it to int, float, str, list or dict)")


def checked_meta(meta) -> None:
    if not isinstance(meta, dict):
        raise CheckpointError(f"meta must be a dict, got {type(meta).__name__}")
    _check_json(meta, "meta")


def checked_step(step):
    if step is None:
        return None
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise CheckpointError(f"step must be a non-negative integer, got {step!r}")
    return int(step)


# ---------------------------------------------------------------------------------- writing

def _worth_deflating(payload: memoryview) -> bool:
    """Whether deflate shrinks this member by more than 10 %, judged on four spread samples."""
    size = len(payload)
    if size <= 4 * _DEFLATE_SAMPLE_BYTES:
        sample = bytes(payload)
    else:
        starts = [k * (size - _DEFLATE_SAMPLE_BYTES) // 3 for k in range(4)]
        sample = b"".join(payload[start:start + _DEFLATE_SAMPLE_BYTES] for start in starts)
    return len(zlib.compress(sample, _DEFLATE_LEVEL)) < _DEFLATE_WORTH_RATIO * len(sample)


def _member_info(name: str, deflate: bool) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def manifest_of(step, parent, meta, descriptions: dict, members: dict) -> dict:
    arrays = {name: {"dtype": d.dtype, "shape": list(d.shape), "sha256": d.sha256, "member": members.get(name)}
              for name, d in descriptions.items()}
    return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "step": step, "parent": parent,
            "meta": meta, "arrays": arrays}


def write_archive(path: Path, manifest: dict, stored_arrays: dict, compress: bool) -> None:
    """Write `stored_arrays` ({member: array}) and the manifest into `path`, atomically."""
    manifest_text = json.dumps(manifest, indent=1, ensure_ascii=False)
    with atomic_output(path) as handle, zipfile.ZipFile(handle, "w") as archive:
        for member, array in stored_arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            payload = buffer.getbuffer()
            deflate = compress and _worth_deflating(payload)
            archive.writestr(_member_info(member, deflate), payload, compresslevel=_DEFLATE_LEVEL)
        archive.writestr(_member_info(MANIFEST_MEMBER, compress), manifest_text, compresslevel=_DEFLATE_LEVEL)


def write_checkpoint(path: Path, step, arrays: dict, meta, descriptions: dict, base: IncrementalBase | None,
                      compress: bool) -> str | None:
    """Write one checkpoint storing only the arrays that differ from `base`; returns its parent."""
    members = {}
    for index, (name, description) in enumerate(descriptions.items()):
        if base is None or base.descriptions.get(name) != description:
            members[name] = f"arrays/{index:05d}.npy"
    parent = base.name if base is not None and len(members) < len(descriptions) else None
    write_archive(path, manifest_of(step, parent, meta, descriptions, members),
                   {member: arrays[name] for name, member in members.items()}, compress)
    return parent


def save_arrays(path, arrays: dict, meta: dict | None = None, *, step: int | None = None,
                compress: bool = True) -> Path:
    """Write a self-contained (full) checkpoint, e.g. ``memory_weights.pt``; read it with
    ``load_checkpoint``. Written atomically; nothing is written if the input is refused."""
    path = Path(path)
    meta = {} if meta is None else meta
    checked_meta(meta)
    write_checkpoint(path, checked_step(step), arrays, meta, describe_arrays(arrays), None, compress)
    return path


# ---------------------------------------------------------------------------------- reading

@contextlib.contextmanager
def _reading(path, what: str):
    """Turn whatever damaged bytes make the ZIP/JSON/.npy readers raise into a CheckpointError."""
    try:
        yield
    except _DAMAGE as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CheckpointError(f"{path}: {what}: {reason or type(error).__name__}") from None


def _migrate_v1_to_v2(manifest: dict, member_names: set) -> dict:
    """Format 1 had no per-array dtype/shape, kept config and training state apart, and named
    the parent ``parent_checkpoint``; its members were ``<name>.npy``. Malformed fields are
    passed on as they are, for the format-2 checks to refuse."""
    state, hashes = manifest.get("training_state", {}), manifest.get("sha256")
    meta = {**state, "config": manifest.get("config")} if isinstance(state, dict) else state
    arrays = hashes
    if isinstance(hashes, dict):
        arrays = {name: {"dtype": None, "shape": None, "sha256": sha256,
                         "member": f"{name}.npy" if f"{name}.npy" in member_names else None}
                  for name, sha256 in hashes.items()}
    return {"format": FORMAT_NAME, "format_version": 2, "step": manifest.get("step"),
            "parent": manifest.get("parent_checkpoint"), "meta": meta, "arrays": arrays}


_MIGRATIONS = {1: _migrate_v1_to_v2}  # version n -> a manifest of version n + 1


class ArchiveReader:
    """One checkpoint file, open: its manifest read, migrated and checked against its members.
    Arrays are read one by one with ``read_array``, which verifies each."""

    def __init__(self, path: Path):
        self.path = path
        with _reading(path, "not a readable ZIP archive"):
            self._archive = zipfile.ZipFile(path)
        try:
            self._read_manifest()
            self._check_members()
        except BaseException:
            self._archive.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._archive.close()

    def _fault(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {what}")

    def _read_manifest(self) -> None:
        names = self._archive.namelist()
        if MANIFEST_MEMBER not in names:
            raise self._fault(f"no {MANIFEST_MEMBER} (not an MLoT checkpoint)")
        with _reading(self.path, MANIFEST_MEMBER):
            manifest = json.loads(self._archive.read(MANIFEST_MEMBER).decode("utf-8"))
        if not isinstance(manifest, dict):
            raise self._fault(f"{MANIFEST_MEMBER} is not a JSON object")
        version = manifest.get("format_version", manifest.get("version"))
        if isinstance(version, bool) or not isinstance(version, int):
            raise self._fault(f"{MANIFEST_MEMBER} has no integer format version")
        if version > FORMAT_VERSION:
            raise self._fault(f"format version {version} is newer than this program reads ({FORMAT_VERSION})")
        self.stored_version = version
        while version < FORMAT_VERSION:
            if version not in _MIGRATIONS:
                raise self._fault(f"unknown format version {version}")
            manifest = _MIGRATIONS[version](manifest, set(names))
            version += 1
        self._parse_manifest(manifest)

    def _parse_manifest(self, manifest: dict) -> None:
        """Check a current-version manifest field by field and keep what loading needs."""
        if manifest.get("format") != FORMAT_NAME:
            raise self._fault(f"{MANIFEST_MEMBER}: format is {manifest.get('format')!r}, not {FORMAT_NAME!r}")
        step, parent, meta, arrays = (manifest.get(key) for key in ("step", "parent", "meta", "arrays"))
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise self._fault(f"{MANIFEST_MEMBER}: bad step {step!r}")
        if parent is not None and (not isinstance(parent, str) or parent in ("", ".", "..")
                                   or any(c in parent for c in "/\\\0")):
            raise self._fault(f"{MANIFEST_MEMBER}: parent {parent!r} is not a file name in this directory")
        if not isinstance(meta, dict) or not isinstance(arrays, dict):
            raise self._fault(f"{MANIFEST_MEMBER}: 'meta' and 'arrays' must be JSON objects")
        self.step, self.parent, self.meta = step, parent, meta
        self.descriptions, self.members = {}, {}
        for name, entry in arrays.items():
            self.descriptions[name], self.members[name] = self._parse_entry(name, entry)
        if parent is None and None in self.members.values():
            raise self._fault(f"{MANIFEST_MEMBER}: arrays without data and no parent to inherit them from")

    def _parse_entry(self, name: str, entry) -> tuple:
        if not isinstance(entry, dict):
            raise self._fault(f"{MANIFEST_MEMBER}: entry of array {name!r} is not a JSON object")
        dtype, shape, sha256, member = (entry.get(key) for key in ("dtype", "shape", "sha256", "member"))
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise self._fault(f"array {name!r}: bad sha256 {sha256!r}")
        if dtype is not None:
            try:
                kind = np.dtype(dtype).kind if isinstance(dtype, str) else "?"
            except (TypeError, ValueError):
                raise self._fault(f"array {name!r}: bad dtype {dtype!r}") from None
            if kind not in _ALLOWED_KINDS:
                raise self._fault(f"array {name!r}: dtype {dtype!r} refused (no pickled objects)")
        if shape is not None:
            if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                      for n in shape):
                raise self._fault(f"array {name!r}: bad shape {shape!r}")
            shape = tuple(shape)
        if member is not None and (not isinstance(member, str) or member == MANIFEST_MEMBER):
            raise self._fault(f"array {name!r}: bad member {member!r}")
        return _Description(dtype, shape, sha256), member

    def _check_members(self) -> None:
        """The ZIP holds exactly the manifest and the listed members, plainly stored or deflated."""
        names = self._archive.namelist()
        listed = [member for member in self.members.values() if member is not None]
        if len(set(listed)) != len(listed):
            raise self._fault(f"{MANIFEST_MEMBER}: two arrays share one member")
        if len(set(names)) != len(names):
            raise self._fault("a member name occurs twice in the ZIP")
        unexpected = sorted(set(names) - set(listed) - {MANIFEST_MEMBER})
        if unexpected:
            raise self._fault(f"unexpected member {unexpected[0]!r} (not listed in {MANIFEST_MEMBER}); refused")
        missing = sorted(set(listed) - set(names))
        if missing:
            raise self._fault(f"member {missing[0]!r} listed in {MANIFEST_MEMBER} is missing")
        for info in self._archive.infolist():
            if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise self._fault(f"member {info.filename!r} is encrypted or uses an unsupported compression")

    def member_bytes(self, name: str) -> int:
        """Uncompressed size of the .npy member holding array `name` (it must be stored here)."""
        return self._archive.getinfo(self.members[name]).file_size

    def read_array(self, name: str) -> np.ndarray:
        """Array `name` (stored in this file), verified against its manifest entry. Object dtypes
        are refused from the .npy header, before any data is read."""
        description = self.descriptions[name]
        with _reading(self.path, f"array {name!r}"), self._archive.open(self.members[name]) as stream:
            version = np.lib.format.read_magic(stream)
            if version not in _NPY_HEADER_READERS:
                raise self._fault(f"array {name!r}: unsupported .npy version {version}")
            shape, fortran_order, dtype = _NPY_HEADER_READERS[version](stream)
            if dtype.kind not in _ALLOWED_KINDS:
                raise self._fault(f"array {name!r}: .npy holds dtype {dtype}, refused (no pickled objects)")
            if description.dtype is not None and (dtype.str, shape) != (description.dtype, description.shape):
                raise self._fault(f"array {name!r}: .npy header says {dtype.str} {shape}, manifest says "
                                  f"{description.dtype} {description.shape}")
            flat = np.empty(math.prod(shape), dtype)
            _read_exactly(stream, memoryview(flat.view(np.uint8)))
            if stream.read(1):  # also makes zipfile check the member's CRC-32
                raise self._fault(f"array {name!r}: extra bytes after the array data")
        array = flat.reshape(shape, order="F" if fortran_order else "C")
        if array_sha256(array) != description.sha256:
            raise self._fault(f"array {name!r}: SHA-256 mismatch (data damaged)")
        return array


def _read_exactly(stream, buffer: memoryview) -> None:
    filled = 0
    while filled < len(buffer):
        count = stream.readinto(buffer[filled:])
        if not count:
            raise EOFError("truncated data")
        filled += count


def _open_chain(path: Path, stack: contextlib.ExitStack) -> list:
    """Readers for `path` and its parents, nearest first; a missing parent or a loop is an error."""
    chain = [stack.enter_context(ArchiveReader(path))]
    seen = {os.path.realpath(path)}
    while chain[-1].parent is not None:
        child = chain[-1]
        parent_path = child.path.with_name(child.parent)
        if os.path.realpath(parent_path) in seen:
            raise CheckpointError(f"{child.path}: parent chain loops back to {child.parent}")
        if not parent_path.is_file():
            raise CheckpointError(f"{child.path}: parent checkpoint {child.parent} is missing")
        seen.add(os.path.realpath(parent_path))
        chain.append(stack.enter_context(ArchiveReader(parent_path)))
    return chain


def _owner(chain: list, name: str):
    """The reader in `chain` that stores array `name`, after checking every file on the way
    holds the same array (same SHA-256, dtype and shape where recorded)."""
    wanted = chain[0].descriptions[name]
    for reader in chain:
        held = reader.descriptions.get(name)
        if held is None or held.sha256 != wanted.sha256 or any(
                mine is not None and theirs is not None and mine != theirs
                for mine, theirs in ((held.dtype, wanted.dtype), (held.shape, wanted.shape))):
            raise CheckpointError(f"{reader.path}: does not hold the array {name!r} that "
                                  f"{chain[0].path.name} inherits from it")
        if reader.members[name] is not None:
            return reader
    raise CheckpointError(f"{chain[-1].path}: array {name!r} is stored nowhere in the chain")


def load_chain(path: Path) -> tuple:
    """(Checkpoint, chain readers nearest first): every array read and verified."""
    with contextlib.ExitStack() as stack:
        chain = _open_chain(path, stack)
        top = chain[0]
        arrays = {name: _owner(chain, name).read_array(name) for name in top.descriptions}
        return Checkpoint(arrays, top.meta, top.step, path), chain


def load_checkpoint(path) -> Checkpoint:
    """Load a checkpoint, resolving its parent chain and verifying every array; raises
    ``CheckpointError`` on any fault (no fallback: see ``CheckpointManager.load_latest``)."""
    return load_chain(Path(path))[0]


def checkpoint_info(path) -> dict:
    """Sizes and parent chain of a checkpoint, from its manifests (arrays are not read or verified).

    ``*_array_bytes`` are uncompressed .npy sizes; ``file_bytes`` are sizes on disk; ``chain``
    lists this file and its parents, nearest first.
    """
    with contextlib.ExitStack() as stack:
        chain = _open_chain(Path(path), stack)
        top = chain[0]
        own = [name for name, member in top.members.items() if member is not None]
        inherited = [name for name, member in top.members.items() if member is None]
        links = [{"path": str(reader.path), "step": reader.step, "file_bytes": reader.path.stat().st_size,
                  "own_arrays": sum(member is not None for member in reader.members.values())}
                 for reader in chain]
        return {"path": str(path), "step": top.step, "format_version": top.stored_version,
                "file_bytes": links[0]["file_bytes"],
                "own_arrays": len(own), "own_array_bytes": sum(top.member_bytes(name) for name in own),
                "inherited_arrays": len(inherited),
                "inherited_array_bytes": sum(_owner(chain, name).member_bytes(name) for name in inherited),
                "chain": links, "chain_file_bytes": sum(link["file_bytes"] for link in links)}
