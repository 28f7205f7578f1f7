"""Content-addressed artifacts (DESIGN.md, "Cache contract").

An artifact (trained weights, loss history, sampled trajectories: anything that
``torch.load(weights_only=True)`` can read back: tensors, dicts, lists, numbers, strings)
is stored as

    <root>/<chapter>/<name>-<key>.pt      the payload, written atomically
    <root>/<chapter>/<name>-<key>.json    its record: chapter, name, settings, version, sha256

where key = sha256(chapter, name, settings, version)[:16]. Loading checks the sha256 of
the payload against the record before unpickling, so a truncated or corrupted file (or a
record that belongs to other settings) is detected, reported in one line and rebuilt,
never a crash.

Roots, searched in order: ``<data>/cache`` (written by default, git-ignored) then
``<data>/shipped`` (small cpu-scale artifacts committed to git so dashboards of a fresh
clone do not train). ``<data>`` is env ``PFLOW_DATA`` or the repository's ``data/`` folder.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

FORMAT_VERSION = 1  # bump when the on-disk layout changes
ENV_DATA = "PFLOW_DATA"
ENV_SHIP = "PFLOW_SHIP"  # set by `pflow-explore prepare --ship`: ship=None then means True

T = TypeVar("T")


class CorruptArtifact(RuntimeError):
    """A payload that fails its checksum, its record, or unpickling."""


def data_dir() -> Path:
    """The data folder: env ``PFLOW_DATA`` or ``<repo>/data``."""
    env = os.environ.get(ENV_DATA)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "data"


def cache_dir() -> Path:
    """Where artifacts are written: ``<data>/cache``."""
    return data_dir() / "cache"


def shipped_dir() -> Path:
    """Artifacts committed to git: ``<data>/shipped``."""
    return data_dir() / "shipped"


def canonical(obj: Any) -> Any:
    """A JSON-able canonical form of settings: dataclasses, dicts, sequences, numbers, enums.

    Dataclasses keep their class name, so two settings classes with equal fields differ.
    Floats are written with repr (exact), dict keys sorted by json.dumps.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"__class__": type(obj).__name__, **fields}
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [canonical(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return canonical(obj.value)
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": obj.detach().cpu().tolist()}
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot key a cache on {type(obj).__name__}: {obj!r}")


def artifact_key(chapter: str, name: str, settings: Any, version: str | int = 0) -> str:
    """sha256 over (format, chapter, name, canonical settings, code version), 16 hex digits."""
    blob = json.dumps(
        [FORMAT_VERSION, chapter, name, canonical(settings), str(version)], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Artifact:
    """Where one artifact lives. ``payload`` is the .pt file, ``record`` the .json beside it."""

    chapter: str
    name: str
    key: str
    root: Path

    @property
    def payload(self) -> Path:
        return self.root / self.chapter / f"{self.name}-{self.key}.pt"

    @property
    def record(self) -> Path:
        return self.payload.with_suffix(".json")

    def exists(self) -> bool:
        return self.payload.exists() or self.record.exists()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save(art: Artifact, obj: Any, settings: Any = None, version: str | int = 0) -> Path:
    """Write payload then record (both atomically); the record is what makes it valid."""
    _atomic_write(art.payload, lambda p: torch.save(obj, p))
    record = {
        "format": FORMAT_VERSION,
        "chapter": art.chapter,
        "name": art.name,
        "key": art.key,
        "version": str(version),
        "settings": canonical(settings),
        "sha256": _sha256(art.payload),
        "bytes": art.payload.stat().st_size,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
    }
    _atomic_write(art.record, lambda p: p.write_text(json.dumps(record, indent=1)))
    return art.payload


def load(art: Artifact, map_location: str | torch.device | None = "cpu") -> Any:
    """Check record and checksum, then ``torch.load(weights_only=True)``.

    Raises CorruptArtifact with a one-line reason on any mismatch.
    """
    if not art.record.exists():
        raise CorruptArtifact("record .json missing")
    if not art.payload.exists():
        raise CorruptArtifact("payload .pt missing")
    try:
        record = json.loads(art.record.read_text())
    except (OSError, ValueError) as err:
        raise CorruptArtifact(f"record unreadable ({err})") from err
    if record.get("key") != art.key or record.get("format") != FORMAT_VERSION:
        raise CorruptArtifact("record belongs to other settings or an older format")
    size = art.payload.stat().st_size
    if size != record.get("bytes"):
        raise CorruptArtifact(f"payload has {size} bytes, record says {record.get('bytes')}")
    if _sha256(art.payload) != record.get("sha256"):
        raise CorruptArtifact("payload checksum does not match its record")
    try:
        return torch.load(art.payload, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        first = (str(err).strip().splitlines() or [""])[0]
        raise CorruptArtifact(f"payload unreadable ({type(err).__name__}: {first})") from err


def locate(chapter: str, name: str, settings: Any, version: str | int = 0) -> list[Artifact]:
    """Candidate locations, in search order: the writable cache, then the shipped folder."""
    key = artifact_key(chapter, name, settings, version)
    return [Artifact(chapter, name, key, root) for root in (cache_dir(), shipped_dir())]


def shipping() -> bool:
    """Whether env ``PFLOW_SHIP`` asks for artifacts to be written into the shipped folder."""
    return os.environ.get(ENV_SHIP, "").strip().lower() in ("1", "true", "yes")


def _copy_artifact(src: Artifact, dst: Artifact, say: Callable[[str], None]) -> None:
    try:
        for a, b in ((src.payload, dst.payload), (src.record, dst.record)):
            _atomic_write(b, lambda p, a=a: shutil.copyfile(a, p))
    except OSError as err:
        say(f"cache: could not ship {src.payload} to {dst.payload} ({err})")


def cached(
    chapter: str,
    name: str,
    settings: Any,
    build: Callable[[], T],
    *,
    version: str | int = 0,
    rebuild: bool = False,
    ship: bool | None = None,
    map_location: str | torch.device | None = "cpu",
    log: Callable[[str], None] | None = None,
) -> tuple[T, bool]:
    """Load the artifact for (chapter, name, settings, version) or build and store it.

    Returns (object, loaded_from_cache). ``build()`` must return something that
    ``torch.load(weights_only=True)`` reads back (state dicts, tensors, lists, numbers).
    A corrupt or mismatched file is reported in one line via ``log`` (default: stderr)
    and rebuilt. ``ship=True`` writes into the shipped folder instead of the cache;
    ``ship=None`` (the default) means True when env ``PFLOW_SHIP`` is ``1``, else False.
    When shipping, an artifact found only in the cache is copied into the shipped folder.
    """
    say = log or (lambda msg: print(msg, file=sys.stderr))
    if ship is None:
        ship = shipping()
    candidates = locate(chapter, name, settings, version)
    if not rebuild:
        for art in candidates:
            if not art.exists():
                continue
            try:
                obj = load(art, map_location)
            except CorruptArtifact as err:
                say(f"cache: {art.payload} is unusable ({err}); rebuilding it")
                continue
            if ship and art is candidates[0]:
                # already built into the cache: shipping must not mean training again
                _copy_artifact(art, candidates[1], say)
            return obj, True
    obj = build()
    target = candidates[1] if ship else candidates[0]
    try:
        save(target, obj, settings, version)
    except OSError as err:  # a read-only data folder must not stop a chapter
        say(f"cache: could not write {target.payload} ({err}); continuing without caching")
    return obj, False
