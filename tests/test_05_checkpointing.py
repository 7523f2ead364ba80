"""Checkpointing: exact round trips, incremental saves, retention, recovery from damaged files,
refusal of pickles, crash safety and format-1 migration.

References are independent of the code under test: the arrays and meta that were saved, the
ZIP read with `zipfile` + `np.load(allow_pickle=False)`, hashes computed here with hashlib, and
format-1 files built by hand.
"""
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest

from mlot.training import checkpointing
from mlot.architecture.checkpoint_file import (CheckpointError, CheckpointRecoveryWarning, checkpoint_info,
                                               load_checkpoint, save_arrays)
from mlot.training.checkpointing import CheckpointManager

NAMES_WITH_SEPARATORS = ["model.blocks.0.attn.qkv.weight", "memory/cascade/episodic.3.keys", "../../escape",
                         "ünïcødé name", "manifest.json"]


def _every_dtype_state() -> dict:
    rng = np.random.default_rng(7)
    state = {f"dtype.{np.dtype(t).name}": rng.integers(0, 100, size=(2, 3)).astype(t)
             for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)}
    state.update({
        "dtype.bool": rng.random((3, 2)) < 0.5,
        "dtype.float16": rng.standard_normal(5).astype(np.float16),
        "dtype.float32": rng.standard_normal((4, 3)).astype(np.float32),
        "dtype.float64.special": np.array([np.nan, np.inf, -np.inf, -0.0, 1e-310]),
        "dtype.complex64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "rng.state": np.array([2**64 - 1, 0, 12345], dtype=np.uint64),
        "zero_d.float": np.array(3.25),
        "zero_d.int": np.array(-7, dtype=np.int32),
        "empty.rows": np.zeros((0, 3), np.float32),
        "empty.middle": np.zeros((2, 0, 4), np.int64),
        "fortran_order": np.asfortranarray(rng.standard_normal((3, 4))),
        "big_endian.int": np.arange(6, dtype=">i4").reshape(2, 3),
        "big_endian.float": np.array([1.5, -2.0], dtype=">f8"),
        "compressible.zeros": np.zeros(5000, np.float32),
    })
    for index, name in enumerate(NAMES_WITH_SEPARATORS):
        state[name] = np.full(index + 1, index, np.int16)
    return state


META = {"config": {"d_model": 64, "layers": [1, 2], "name": "tiny ✓"}, "step": 12, "lr": 3e-4,
        "rng": {"state": 2**100 + 1, "inc": 5}, "flags": [True, False, None], "loss": float("inf")}


def _assert_same_state(loaded: dict, expected: dict) -> None:
    assert list(loaded) == list(expected)
    for name, array in expected.items():
        got = loaded[name]
        assert got.dtype == array.dtype and got.shape == array.shape, name
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(array).tobytes(), name


def _state(step: int, frozen_seed: int = 0) -> dict:
    """A tiny training state: 'model.frozen' never changes, the others depend on `step`."""
    return {"model.frozen": np.random.default_rng(frozen_seed).standard_normal(64).astype(np.float32),
            "optim.moment": np.random.default_rng(step).standard_normal(32).astype(np.float32),
            "counter": np.array(step, np.int64)}


def _manifest_of(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("manifest.json"))


def _npy_members(path) -> dict:
    """{array name: array} for the arrays a file stores itself, read with plain numpy."""
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        return {name: np.load(io.BytesIO(archive.read(entry["member"])), allow_pickle=False)
                for name, entry in manifest["arrays"].items() if entry["member"] is not None}


def _rewrite(path, manifest_edit=None, replace=None, drop=(), add=None) -> None:
    """Rebuild a checkpoint ZIP (with valid CRCs) after editing its manifest or members."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(members["manifest.json"])
    if manifest_edit:
        manifest_edit(manifest)
    members["manifest.json"] = json.dumps(manifest).encode()
    members.update(replace or {})
    members.update(add or {})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            if name not in drop:
                archive.writestr(name, data)


def _npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _member_data_offset(path, member: str) -> int:
    """Byte offset in the file where `member`'s (stored) data begins, from its local header."""
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(member).header_offset
    header = open(path, "rb").read()[offset:offset + 30]
    name_length, extra_length = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    return offset + 30 + name_length + extra_length


def _flip_byte(path, offset: int) -> None:
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0xFF
    open(path, "wb").write(bytes(data))


def _truncate(path, fraction=0.5) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[:int(len(data) * fraction)])


# ------------------------------------------------------------------------------ round trips

def test_round_trip_is_exact_for_every_dtype_edge_shape_and_name(tmp_path):
    state = _every_dtype_state()
    path = save_arrays(tmp_path / "memory_weights.pt", state, META, step=12)
    loaded = load_checkpoint(path)
    _assert_same_state(loaded.arrays, state)
    assert loaded.step == 12 and loaded.path == path
    assert json.dumps(loaded.meta) == json.dumps(META)
    assert all(array.flags.writeable for array in loaded.arrays.values())
    assert loaded.arrays["fortran_order"][1, 2] == state["fortran_order"][1, 2]
    # A plain ZIP of plain .npy files: readable without this code.
    _assert_same_state(_npy_members(path), state)
    manifest = _manifest_of(path)
    for name, array in state.items():
        assert manifest["arrays"][name]["sha256"] == hashlib.sha256(
            np.ascontiguousarray(array).tobytes()).hexdigest()


def test_same_state_gives_identical_bytes_and_zeros_are_compressed(tmp_path):
    state = _every_dtype_state()
    first = save_arrays(tmp_path / "a.pt", state, META).read_bytes()
    second = save_arrays(tmp_path / "b.pt", state, META).read_bytes()
    assert first == second
    assert len(first) < state["compressible.zeros"].nbytes / 2
    assert len(save_arrays(tmp_path / "raw.pt", state, META, compress=False).read_bytes()) > len(first)


# ------------------------------------------------------------------------------ incremental saves

def test_incremental_checkpoint_stores_only_changed_arrays_and_loads_exactly(tmp_path):
    manager = CheckpointManager(tmp_path, full_every=10)
    first = {**_state(1), "removed_later": np.arange(3), "reshaped": np.arange(6.0).reshape(2, 3)}
    manager.save(1, first, {"step": 1})
    second = {**_state(2), "added": np.ones(4, np.uint8), "reshaped": np.arange(6.0).reshape(3, 2)}
    path = manager.save(2, second, {"step": 2})

    stored = _npy_members(path)
    assert sorted(stored) == ["added", "counter", "optim.moment", "reshaped"]
    _assert_same_state({name: stored[name] for name in sorted(stored)}, {name: second[name] for name in sorted(stored)})
    assert _manifest_of(path)["parent"] == "ckpt_00000001.pt"
    _assert_same_state(load_checkpoint(path).arrays, second)
    _assert_same_state(load_checkpoint(tmp_path / "ckpt_00000001.pt").arrays, first)
    latest = CheckpointManager(tmp_path).load_latest()
    _assert_same_state(latest.arrays, second)
    assert latest.meta == {"step": 2} and latest.step == 2

    resumed = CheckpointManager(tmp_path, full_every=10)  # resuming from a named file
    resumed.load(tmp_path / "ckpt_00000002.pt")
    third = dict(second, counter=np.array(3, np.int64))
    path = resumed.save(3, third, {"step": 3})
    assert list(_npy_members(path)) == ["counter"] and _manifest_of(path)["parent"] == "ckpt_00000002.pt"
    _assert_same_state(load_checkpoint(tmp_path / "latest_checkpoint.pt").arrays, third)


def test_a_full_checkpoint_every_n_saves(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=100, full_every=3)
    for step in range(1, 8):
        manager.save(step, _state(step), {})
    parents = [_manifest_of(tmp_path / f"ckpt_{step:08d}.pt")["parent"] for step in range(1, 8)]
    assert parents == [None, "ckpt_00000001.pt", "ckpt_00000002.pt", None,
                       "ckpt_00000004.pt", "ckpt_00000005.pt", None]
    for step in range(1, 8):
        _assert_same_state(load_checkpoint(tmp_path / f"ckpt_{step:08d}.pt").arrays, _state(step))


def test_retention_keeps_the_newest_and_every_parent_they_need(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "ckpt_best.pt").write_bytes(b"not ours to delete")
    manager = CheckpointManager(tmp_path, keep_last=2, full_every=3)
    for step in range(1, 8):  # full at 1, 4, 7
        manager.save(step, _state(step), {})
    checkpoints = sorted(p.name for p in tmp_path.glob("ckpt_0*.pt"))
    assert checkpoints == [f"ckpt_{step:08d}.pt" for step in (4, 5, 6, 7)]
    for step in (4, 5, 6, 7):
        _assert_same_state(load_checkpoint(tmp_path / f"ckpt_{step:08d}.pt").arrays, _state(step))
    manager.save(8, _state(8), {})  # incremental on 7 (full): 4, 5, 6 are no longer needed
    assert sorted(p.name for p in tmp_path.glob("ckpt_0*.pt")) == ["ckpt_00000007.pt", "ckpt_00000008.pt"]
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "ckpt_best.pt").exists()


def test_saving_the_same_step_twice_does_not_make_a_file_its_own_parent(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(5, _state(1), {"take": 1})
    manager.save(5, _state(2), {"take": 2})
    checkpoint = CheckpointManager(tmp_path).load_latest()
    _assert_same_state(checkpoint.arrays, _state(2))
    assert checkpoint.meta == {"take": 2}


# ------------------------------------------------------------------------------ recovery

def _three_checkpoints(folder) -> None:
    """ckpt 1 (full) <- 2 <- 3, stored uncompressed so that a byte can be flipped inside the data."""
    manager = CheckpointManager(folder, full_every=10, compress=False)
    for step in (1, 2, 3):
        manager.save(step, _state(step), {"step": step})


def _damage_latest_by_truncation(folder):
    _truncate(folder / "latest_checkpoint.pt")
    return 3, ["latest_checkpoint.pt skipped"]


def _damage_latest_by_flipped_byte(folder):
    _flip_byte(folder / "latest_checkpoint.pt", os.path.getsize(folder / "latest_checkpoint.pt") // 2)
    return 3, ["latest_checkpoint.pt skipped"]


def _damage_newest_by_truncation(folder):
    _truncate(folder / "ckpt_00000003.pt", 0.9)
    return 2, ["latest_checkpoint.pt skipped", "ckpt_00000003.pt skipped"]


def _damage_newest_array_data(folder):
    path = folder / "ckpt_00000003.pt"
    member = _manifest_of(path)["arrays"]["optim.moment"]["member"]
    with zipfile.ZipFile(path) as archive:
        size = archive.getinfo(member).file_size
    _flip_byte(path, _member_data_offset(path, member) + size - 1)  # the last byte of the array data
    return 2, ["latest_checkpoint.pt skipped", "ckpt_00000003.pt skipped"]


def _delete_parent_of_newest(folder):
    os.unlink(folder / "ckpt_00000002.pt")
    return 1, ["latest_checkpoint.pt skipped", "ckpt_00000003.pt skipped", "ckpt_00000002.pt is missing"]


def _delete_latest(folder):
    os.unlink(folder / "latest_checkpoint.pt")
    return 3, ["latest_checkpoint.pt skipped (missing)"]


@pytest.mark.parametrize("damage", [_damage_latest_by_truncation, _damage_latest_by_flipped_byte,
                                    _damage_newest_by_truncation, _damage_newest_array_data,
                                    _delete_parent_of_newest, _delete_latest])
def test_damaged_latest_falls_back_to_the_newest_valid_checkpoint_with_a_warning(tmp_path, damage):
    _three_checkpoints(tmp_path)
    expected_step, named = damage(tmp_path)
    manager = CheckpointManager(tmp_path, full_every=10)
    with pytest.warns(CheckpointRecoveryWarning) as record:
        checkpoint = manager.load_latest()
    message = str(record[0].message)
    assert "\n" not in message and f"step {expected_step}" in message
    assert all(text in message for text in named), message
    assert checkpoint.step == expected_step and checkpoint.meta == {"step": expected_step}
    _assert_same_state(checkpoint.arrays, _state(expected_step))
    # Training goes on from there: the next save builds on the checkpoint that was loaded.
    manager.save(expected_step + 10, _state(99), {"step": 99})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same_state(CheckpointManager(tmp_path).load_latest().arrays, _state(99))


def test_nothing_valid_raises_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        CheckpointManager(tmp_path).load_latest()
    _three_checkpoints(tmp_path)
    os.unlink(tmp_path / "ckpt_00000001.pt")
    _truncate(tmp_path / "latest_checkpoint.pt")
    with pytest.raises(CheckpointError, match="no valid checkpoint") as error:
        CheckpointManager(tmp_path).load_latest()
    assert "\n" not in str(error.value)


def test_changed_data_behind_a_valid_crc_is_caught_by_its_sha256(tmp_path):
    path = save_arrays(tmp_path / "a.pt", _state(1), {})
    member = _manifest_of(path)["arrays"]["optim.moment"]["member"]
    forged = _state(1)["optim.moment"].copy()
    forged[3] += 1
    _rewrite(path, replace={member: _npy_bytes(forged)})
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(path)


def _set_entry(name, key, value):
    return lambda manifest: manifest["arrays"][name].__setitem__(key, value)


@pytest.mark.parametrize("edit, drop, add, reason", [
    (_set_entry("counter", "sha256", "0" * 64), (), None, "SHA-256 mismatch"),
    (_set_entry("optim.moment", "dtype", "<i4"), (), None, "header says"),
    (_set_entry("optim.moment", "shape", [4, 8]), (), None, "header says"),
    (_set_entry("optim.moment", "dtype", "|O"), (), None, "refused"),
    (_set_entry("optim.moment", "member", None), (), None, "no parent"),
    (lambda m: m.__setitem__("parent", "../outside.pt"), (), None, "not a file name"),
    (lambda m: m.__setitem__("format_version", 3), (), None, "newer"),
    (lambda m: m["arrays"].pop("counter"), (), None, "unexpected member"),
    (None, (), {"extra.bin": b"hello"}, "unexpected member 'extra.bin'"),
    (None, ("arrays/00001.npy",), None, "is missing"),
    (None, (), {"arrays/00001.npy": _npy_bytes(_state(1)["optim.moment"])[:-3]}, "truncated data"),
    (None, (), {"arrays/00001.npy": _npy_bytes(_state(1)["optim.moment"]) + b"\0"}, "extra bytes"),
])
def test_tampered_manifest_or_members_are_refused(tmp_path, edit, drop, add, reason):
    path = save_arrays(tmp_path / "a.pt", _state(1), {})
    _rewrite(path, manifest_edit=edit, drop=drop, add=add)
    with pytest.raises(CheckpointError, match=reason) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


@pytest.mark.parametrize("compress", [True, False])
def test_every_flipped_byte_or_truncation_is_caught_or_harmless(tmp_path, compress):
    """Flip each byte of a small checkpoint in turn (and cut it at each length): loading either
    gives back exactly what was saved (the byte was not used, e.g. a timestamp) or raises
    CheckpointError — never another exception, never different data."""
    state = {"weights": np.random.default_rng(3).standard_normal(8).astype(np.float32),
             "zeros": np.zeros(40, np.int64), "flag": np.array(True)}
    path = save_arrays(tmp_path / "small.pt", state, {"lr": 0.5}, step=4, compress=compress)
    original = path.read_bytes()
    damaged_path = tmp_path / "damaged.pt"
    harmless = 0
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        damaged_path.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(damaged_path)
        except CheckpointError:
            continue
        _assert_same_state(loaded.arrays, state)
        assert loaded.meta == {"lr": 0.5} and loaded.step == 4
        harmless += 1
    assert harmless < len(original) // 3
    for length in range(len(original)):
        damaged_path.write_bytes(original[:length])
        with pytest.raises(CheckpointError):
            load_checkpoint(damaged_path)


# ------------------------------------------------------------------------------ no pickle

class _CreatesFileWhenUnpickled:
    """Its pickle calls open(marker, "w") when loaded: proof that unpickling ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _object_npy(marker) -> bytes:
    return _npy_bytes(np.array([_CreatesFileWhenUnpickled(marker)], dtype=object), allow_pickle=True)


def test_the_attack_payload_is_live_when_unpickled(tmp_path):
    marker = tmp_path / "proof"
    np.load(io.BytesIO(_object_npy(marker)), allow_pickle=True)
    assert marker.exists()


def _object_member_listed_as_object(path, marker):
    _rewrite(path, manifest_edit=_set_entry("optim.moment", "dtype", "|O"),
             replace={"arrays/00001.npy": _object_npy(marker)})


def _object_member_listed_as_float(path, marker):
    _rewrite(path, manifest_edit=_set_entry("optim.moment", "shape", [1]),
             replace={"arrays/00001.npy": _object_npy(marker)})


def _raw_pickle_as_array_member(path, marker):
    _rewrite(path, replace={"arrays/00001.npy": pickle.dumps(_CreatesFileWhenUnpickled(marker))})


def _torch_style_zip(path, marker):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": _CreatesFileWhenUnpickled(marker)}))


def _pickle_file(path, marker):
    path.write_bytes(pickle.dumps(_CreatesFileWhenUnpickled(marker)))


def _pickle_smuggled_next_to_arrays(path, marker):
    _rewrite(path, add={"data.pkl": pickle.dumps(_CreatesFileWhenUnpickled(marker))})


@pytest.mark.parametrize("poison", [_object_member_listed_as_object, _object_member_listed_as_float,
                                    _raw_pickle_as_array_member, _torch_style_zip, _pickle_file,
                                    _pickle_smuggled_next_to_arrays])
def test_a_checkpoint_carrying_a_pickle_is_refused_without_running_it(tmp_path, poison):
    marker = tmp_path / "pwned"
    path = save_arrays(tmp_path / "evil.pt", _state(1), {})
    poison(path, marker)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_poisoned_latest_falls_back_without_running_the_pickle(tmp_path):
    marker = tmp_path / "pwned"
    manager = CheckpointManager(tmp_path / "run")
    manager.save(1, _state(1), {})
    _torch_style_zip(tmp_path / "run" / "latest_checkpoint.pt", marker)
    with pytest.warns(CheckpointRecoveryWarning, match="no manifest.json"):
        checkpoint = CheckpointManager(tmp_path / "run").load_latest()
    _assert_same_state(checkpoint.arrays, _state(1))
    assert not marker.exists()


# ------------------------------------------------------------------------------ crash safety

class _SimulatedCrash(Exception):
    pass


@pytest.mark.parametrize("keep_last, full_every", [(1, 1), (3, 5)])  # deletes the old file / incremental
def test_a_crash_at_any_step_of_a_save_leaves_latest_valid(tmp_path, monkeypatch, keep_last, full_every):
    """Make the k-th file-system call of a save raise, for every k: afterwards latest loads,
    without a warning, either the old state or the new one, and no temporary file survives."""
    targets = [(os, "replace"), (os, "fsync"), (os, "unlink"), (zipfile.ZipFile, "writestr")]

    def save_crashing_at(folder, crash_at):
        calls = [0]

        def wrap(function):
            def wrapper(*args, **kwargs):
                calls[0] += 1
                if calls[0] == crash_at:
                    raise _SimulatedCrash
                return function(*args, **kwargs)
            return wrapper

        manager = CheckpointManager(folder, keep_last=keep_last, full_every=full_every)
        manager.save(1, _state(1), {"step": 1})
        with monkeypatch.context() as patch:
            for owner, name in targets:
                patch.setattr(owner, name, wrap(getattr(owner, name)))
            try:
                manager.save(2, _state(2), {"step": 2})
            except _SimulatedCrash:
                return True
        return False

    crash_at = 1
    while save_crashing_at(tmp_path / str(crash_at), crash_at):
        folder = tmp_path / str(crash_at)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            checkpoint = CheckpointManager(folder).load_latest()
        assert checkpoint.step in (1, 2)
        _assert_same_state(checkpoint.arrays, _state(checkpoint.step))
        assert not [name for name in os.listdir(folder) if name.endswith(".tmp")]
        crash_at += 1
    assert crash_at > 8  # the save really went through many steps


_SAVING_FOREVER = """
import sys
import numpy as np
from mlot.training.checkpointing import CheckpointManager
manager = CheckpointManager(sys.argv[1], keep_last=2, full_every=3)
frozen = np.random.default_rng(0).standard_normal(300_000).astype(np.float32)
step = 0
while True:
    step += 1
    manager.save(step, {"frozen": frozen, "moving": np.full(200_000, step, np.int64)}, {"step": step})
    print(step, flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.025, 0.05, 0.09])
def test_killing_the_process_mid_save_leaves_latest_valid(tmp_path, delay):
    process = subprocess.Popen([sys.executable, "-c", _SAVING_FOREVER, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline().strip() == b"1"
        time.sleep(delay)
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint = CheckpointManager(tmp_path).load_latest()
    step = checkpoint.meta["step"]
    assert checkpoint.step == step >= 1
    np.testing.assert_array_equal(checkpoint.arrays["moving"], np.full(200_000, step, np.int64))
    np.testing.assert_array_equal(checkpoint.arrays["frozen"],
                                  np.random.default_rng(0).standard_normal(300_000).astype(np.float32))
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_only_this_module_s_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".ckpt_00000007.pt.0123abcd.tmp").write_bytes(b"partial")
    (tmp_path / ".latest_checkpoint.pt.89abcdef.tmp").write_bytes(b"partial")
    (tmp_path / ".someone_else.0123abcd.tmp").write_bytes(b"keep")
    CheckpointManager(tmp_path)
    assert os.listdir(tmp_path) == [".someone_else.0123abcd.tmp"]


# ------------------------------------------------------------------------------ format 1

def _sha256(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _write_format_1(path, stored: dict, all_arrays: dict, step, parent, config, training_state) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in stored.items():
            archive.writestr(f"{name}.npy", _npy_bytes(array))
        archive.writestr("manifest.json", json.dumps({
            "version": 1, "step": step, "config": config, "training_state": training_state,
            "parent_checkpoint": parent, "sha256": {name: _sha256(a) for name, a in all_arrays.items()}}))


def test_format_1_checkpoints_are_migrated_on_load(tmp_path):
    first, second = _state(1), _state(2)
    config = {"d_model": 32}
    _write_format_1(tmp_path / "ckpt_00000001.pt", first, first, 1, None, config, {"epoch": 0})
    changed = {name: second[name] for name in ("optim.moment", "counter")}
    _write_format_1(tmp_path / "ckpt_00000002.pt", changed, second, 2, "ckpt_00000001.pt", config, {"epoch": 1})

    checkpoint = load_checkpoint(tmp_path / "ckpt_00000002.pt")
    _assert_same_state(checkpoint.arrays, second)
    assert checkpoint.step == 2 and checkpoint.meta == {"epoch": 1, "config": config}
    info = checkpoint_info(tmp_path / "ckpt_00000002.pt")
    assert info["format_version"] == 1 and (info["own_arrays"], info["inherited_arrays"]) == (2, 1)

    manager = CheckpointManager(tmp_path, keep_last=10)
    with pytest.warns(CheckpointRecoveryWarning, match=r"latest_checkpoint.pt skipped \(missing\)"):
        manager.load_latest()
    manager.save(3, _state(3), {"epoch": 2})  # a format-2 file on top of format-1 history
    assert _manifest_of(tmp_path / "ckpt_00000003.pt")["format_version"] == 2
    _assert_same_state(load_checkpoint(tmp_path / "latest_checkpoint.pt").arrays, _state(3))


def test_a_damaged_format_1_array_is_caught(tmp_path):
    state = _state(1)
    wrong = dict(state, counter=np.array(5, np.int64))
    _write_format_1(tmp_path / "old.pt", state, wrong, 1, None, {}, {})
    with pytest.raises(CheckpointError, match="'counter': SHA-256 mismatch"):
        load_checkpoint(tmp_path / "old.pt")


# ------------------------------------------------------------------------------ refused input

@pytest.mark.parametrize("arrays, meta, step, reason", [
    ({"a": np.array([object()], dtype=object)}, {}, 1, "dtype object cannot be saved"),
    ({"a": [1.0, 2.0]}, {}, 1, "expected a numpy array, got list"),
    ({"": np.zeros(1)}, {}, 1, "non-empty string"),
    ({"a": np.zeros(1)}, {"curriculum": {1: "stage"}}, 1, r"meta\['curriculum'\]: key 1 is not a string"),
    ({"a": np.zeros(1)}, {"history": [{"loss": np.float32(1.5)}]}, 1,
     r"meta\['history'\]\[0\]\['loss'\] holds a float32"),
    ({"a": np.zeros(1)}, [("step", 1)], 1, "meta must be a dict"),
    ({"a": np.zeros(1)}, {}, True, "step must be a non-negative integer"),
    ({"a": np.zeros(1)}, {}, -1, "step must be a non-negative integer"),
])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, arrays, meta, step, reason):
    manager = CheckpointManager(tmp_path / "run")
    with pytest.raises(CheckpointError, match=reason):
        manager.save(step, arrays, meta)
    assert os.listdir(tmp_path / "run") == []


# ------------------------------------------------------------------------------ sizes and the CLI

def test_checkpoint_info_reports_own_and_inherited_sizes_and_the_chain(tmp_path):
    manager = CheckpointManager(tmp_path, full_every=10)
    manager.save(1, _state(1), {})
    manager.save(2, _state(2), {})
    info = checkpoint_info(tmp_path / "ckpt_00000002.pt")
    with zipfile.ZipFile(tmp_path / "ckpt_00000001.pt") as archive:
        frozen_member = _manifest_of(tmp_path / "ckpt_00000001.pt")["arrays"]["model.frozen"]["member"]
        frozen_bytes = archive.getinfo(frozen_member).file_size
    assert (info["own_arrays"], info["inherited_arrays"]) == (2, 1)
    assert info["inherited_array_bytes"] == frozen_bytes
    assert info["file_bytes"] == os.path.getsize(tmp_path / "ckpt_00000002.pt")
    assert [os.path.basename(link["path"]) for link in info["chain"]] == ["ckpt_00000002.pt", "ckpt_00000001.pt"]
    assert info["chain_file_bytes"] == sum(os.path.getsize(tmp_path / f"ckpt_0000000{s}.pt") for s in (1, 2))
    latest = checkpoint_info(tmp_path / "latest_checkpoint.pt")
    assert latest["own_arrays"] == 0 and latest["inherited_arrays"] == 3 and latest["step"] == 2


def test_inspect_command_prints_the_chain_and_fails_cleanly_on_a_bad_file(tmp_path, capsys):
    manager = CheckpointManager(tmp_path, full_every=10)
    manager.save(1, _state(1), {})
    manager.save(2, _state(2), {})
    assert checkpointing.main(["inspect", str(tmp_path / "latest_checkpoint.pt"), "--verify"]) == 0
    output = capsys.readouterr().out
    assert "latest_checkpoint.pt (" in output and "ckpt_00000002.pt" in output and "verified" in output
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert checkpointing.main(["inspect", str(tmp_path / "junk.pt")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "junk.pt" in error
