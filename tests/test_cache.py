from dataclasses import dataclass

import pytest
import torch

from pflow_explore import cache


@dataclass
class Settings:
    n: int = 3
    lr: float = 1e-3


def build_counter():
    calls = []

    def build():
        calls.append(1)
        return {"w": torch.arange(1000.0), "losses": [1.0, 0.5]}

    return build, calls


def test_build_once_then_load(data_dir):
    build, calls = build_counter()
    obj, hit = cache.cached("ch", "model", Settings(), build, version=1)
    assert not hit and len(calls) == 1
    obj2, hit2 = cache.cached("ch", "model", Settings(), build, version=1)
    assert hit2 and len(calls) == 1
    assert torch.equal(obj["w"], obj2["w"]) and obj2["losses"] == [1.0, 0.5]
    arts = cache.locate("ch", "model", Settings(), 1)
    assert arts[0].payload.parent == data_dir / "cache" / "ch"


def test_key_depends_on_everything():
    base = cache.artifact_key("ch", "m", Settings(), 1)
    assert base == cache.artifact_key("ch", "m", Settings(), 1)
    others = [
        cache.artifact_key("ch2", "m", Settings(), 1),
        cache.artifact_key("ch", "m2", Settings(), 1),
        cache.artifact_key("ch", "m", Settings(n=4), 1),
        cache.artifact_key("ch", "m", Settings(lr=1.1e-3), 1),
        cache.artifact_key("ch", "m", Settings(), 2),
        cache.artifact_key("ch", "m", {"n": 3, "lr": 1e-3}, 1),  # class name is part of it
    ]
    assert len(set(others + [base])) == len(others) + 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "record", "garbage"])
def test_corrupt_file_detected_and_rebuilt(data_dir, damage):
    build, calls = build_counter()
    cache.cached("ch", "model", Settings(), build)
    art = cache.locate("ch", "model", Settings())[0]
    raw = art.payload.read_bytes()
    if damage == "truncate":
        art.payload.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        art.payload.write_bytes(raw[:-40] + bytes(b ^ 0xFF for b in raw[-40:]))
    elif damage == "record":
        art.record.write_text("{not json")
    else:  # checksum made to match garbage: the unpickler must still be caught
        art.payload.write_bytes(b"garbage" * 10)
        import json

        rec = json.loads(art.record.read_text())
        rec["sha256"] = cache._sha256(art.payload)
        rec["bytes"] = art.payload.stat().st_size
        art.record.write_text(json.dumps(rec))
    messages = []
    obj, hit = cache.cached("ch", "model", Settings(), build, log=messages.append)
    assert not hit and len(calls) == 2
    assert len(messages) == 1 and "unusable" in messages[0] and "\n" not in messages[0]
    assert torch.equal(obj["w"], torch.arange(1000.0))
    assert cache.cached("ch", "model", Settings(), build)[1]  # and the rebuilt file is good


def test_weights_only_refuses_arbitrary_objects(data_dir):
    import datetime

    art = cache.locate("ch", "pickle", Settings())[0]
    cache.save(art, {"when": datetime.date(2020, 1, 1)}, Settings())  # needs full pickle
    with pytest.raises(cache.CorruptArtifact, match="unreadable"):
        cache.load(art)


def test_shipped_folder_is_searched(data_dir):
    build, calls = build_counter()
    cache.cached("ch", "model", Settings(), build, ship=True)
    assert (data_dir / "shipped" / "ch").exists() and not (data_dir / "cache").exists()
    _, hit = cache.cached("ch", "model", Settings(), build)
    assert hit and len(calls) == 1


def test_unkeyable_settings_fail_clearly():
    with pytest.raises(TypeError, match="cannot key"):
        cache.artifact_key("ch", "m", {"f": object()})
