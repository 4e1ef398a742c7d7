"""The pieces every task shares: ``Example``, ``TaskSpec``, row reading from files and the hub."""

from __future__ import annotations

import gzip
import json
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


class TaskDataError(ValueError):
    """Data that cannot be turned into examples; the message names the data set, file, row or column."""

    row_number: int | None = None


class NoGoldAnswer(TaskDataError):
    """A row whose gold answer is missing: skipped with a warning, unless every row is like that."""


@dataclass
class Example:
    """One problem: what the model sees, and what its answer is checked against."""

    id: str  # the source's own id where it has one (MATH-500 unique_id, MBPP task_id, ...)
    problem: str
    reference: Any  # gold answer string (math) or a test spec in the code verifier's format
    verifier: str  # registered verifier name: "math" or "code"
    metadata: dict[str, Any] = field(default_factory=dict)  # the source row's other fields


@dataclass(frozen=True)
class HubSource:
    """Where a task lives on the Hugging Face hub."""

    dataset: str
    config: str | None = None
    split: str = "train"  # used when ``load`` gets no split

    def describe(self) -> str:
        config = f", config {self.config!r}" if self.config else ""
        return f"hub dataset {self.dataset!r}{config}"


class Row:
    """One source row plus where it came from, so that every error can say which row and column."""

    def __init__(self, data: dict[str, Any], number: int, source: str, columns: dict[str, tuple[str, ...]],
                 answer_optional: bool = False):
        self.data = data
        self.answer_optional = answer_optional  # a row without a gold answer gets reference None (TTRL)
        self.number = number  # 1-based
        self.source = source
        self.columns = columns
        self._used: set[str] = set()

    def where(self) -> str:
        return f"{self.source}, row {self.number}"

    def error(self, message: str, kind: type[TaskDataError] = TaskDataError) -> TaskDataError:
        error = kind(f"{self.where()}: {message}")
        error.row_number = self.number
        return error

    def get(self, role: str, required: bool = True) -> Any:
        """The value of the first of the role's candidate columns the row has (dotted paths reach into
        nested fields, e.g. ``reward_model.ground_truth``)."""
        candidates = self.columns.get(role, ())
        for name in candidates:
            found, value = _lookup(self.data, name)
            if found:
                if required and (value is None or (isinstance(value, str) and not value.strip()) or value == []):
                    raise self.error(f"column {name!r} ({role}) is empty")
                return value
        if not required:
            return None
        looked = ", ".join(repr(name) for name in candidates)
        raise self.error(
            f"no {role} column (looked for {looked}; the row has {', '.join(map(repr, self.data)) or 'no fields'}). "
            f"Pass {role}_column='NAME' to say which column holds it."
        )

    def text(self, role: str, required: bool = True) -> str | None:
        value = self.get(role, required)
        if value is None:
            return None
        if not isinstance(value, (str, int, float)):
            raise self.error(f"{role} should be text, got {type(value).__name__}: {str(value)[:80]!r}")
        return str(value)

    def take(self, column: str) -> Any:
        """The raw column ``column`` (None when absent), kept out of the metadata."""
        self._used.add(column)
        return self.data.get(column)

    def rest(self) -> dict[str, Any]:
        """The row's fields that no role uses: the example's metadata."""
        used = set(self._used)
        for candidates in self.columns.values():
            found = next((name for name in candidates if _lookup(self.data, name)[0]), None)
            if found is not None:
                used.add(found.split(".")[0])
        return {key: value for key, value in self.data.items() if key not in used}


def _lookup(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    value: Any = data
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


RowConverter = Callable[[Row], tuple[str | None, str, Any, dict[str, Any]]]


@dataclass(kw_only=True)
class TaskSpec:
    """A registered task: what kind of problems, where they come from, which verifier checks them."""

    kind: str  # "math" or "code"
    summary: str
    verifier: str  # registered verifier name
    sizes: dict[str, int] = field(default_factory=dict)  # rows per split, when known
    name: str = ""  # filled in by ``tasks.get``

    @property
    def source(self) -> str:
        """Where the examples come from by default, for ``rlvr tasks list``."""
        raise NotImplementedError

    def load(
        self,
        split: str | None = None,
        path: str | Path | None = None,
        limit: int | None = None,
        seed: int | None = None,
        *,
        require_answers: bool = True,
        **options: Any,
    ) -> list[Example]:
        """Examples of ``split`` from the default source or the local file ``path``; shuffled by
        ``seed`` when given, then cut to ``limit``. ``options`` are per task (column names, knobs).
        ``require_answers=False`` keeps rows without a gold answer, with reference None (label-free
        training, TTRL); by default they are skipped with a warning."""
        raise NotImplementedError


@dataclass(kw_only=True)
class DataTask(TaskSpec):
    """A task read from a data set: the hub by default, or a local file.

    ``convert`` turns a :class:`Row` into ``(id or None, problem, reference, metadata)``.
    ``columns`` maps a role (problem, answer, solution, id, tests, ...) to candidate column names, tried
    in order; ``load(..., problem_column="q")`` replaces the candidates with exactly that column.
    """

    convert: RowConverter
    columns: dict[str, tuple[str, ...]]
    hub: HubSource | None = None
    read_default: Callable[[str | None], tuple[list[dict[str, Any]], str]] | None = None  # overrides the hub
    default_source: str = ""  # how ``read_default`` finds its data, for ``rlvr tasks list``
    dedupe: bool = False  # drop repeated problems (DAPO-Math-17k ships each one many times)

    @property
    def source(self) -> str:
        if self.default_source:
            return self.default_source
        if self.hub is not None:
            config = f":{self.hub.config}" if self.hub.config else ""
            return f"hf:{self.hub.dataset}{config} [{self.hub.split}]"
        return "your file (path=)"

    def load(
        self,
        split: str | None = None,
        path: str | Path | None = None,
        limit: int | None = None,
        seed: int | None = None,
        *,
        require_answers: bool = True,
        **options: Any,
    ) -> list[Example]:
        columns = self._columns_with(options)
        if path is not None:
            rows, source = read_file(path, split)
        elif self.read_default is not None:
            rows, source = self.read_default(split)
        elif self.hub is not None:
            rows, source = read_hub(self.name, self.hub, split, self.columns)
        else:
            raise TaskDataError(f"task {self.name!r} reads your own data: pass path='FILE' (jsonl, json or parquet)")
        examples, unanswered = [], []
        for number, data in enumerate(rows, start=1):
            try:
                examples.append(self._example(Row(data, number, source, columns, answer_optional=not require_answers)))
            except NoGoldAnswer as error:
                unanswered.append(error)
        if unanswered and not examples:
            raise unanswered[0]
        if unanswered:
            numbers = ", ".join(str(error.row_number) for error in unanswered[:10])
            warnings.warn(
                f"{source}: skipped {len(unanswered)} of {len(rows)} rows without a gold answer (rows {numbers}"
                f"{', ...' if len(unanswered) > 10 else ''}); first: {unanswered[0]}",
                stacklevel=2,
            )
        if self.dedupe:
            first_of = {}
            for example in examples:
                first_of.setdefault(example.problem, example)
            examples = list(first_of.values())
        return select(examples, limit, seed)

    def _columns_with(self, options: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        columns = dict(self.columns)
        for key, value in options.items():
            role = key.removesuffix("_column")
            if not key.endswith("_column") or role not in columns:
                valid = ", ".join(f"{role}_column" for role in columns)
                raise TaskDataError(f"task {self.name!r} has no option {key!r}; valid options: {valid}")
            columns[role] = (str(value),)
        return columns

    def _example(self, row: Row) -> Example:
        if not isinstance(row.data, dict):
            raise row.error(f"expected an object with named fields, got {type(row.data).__name__}")
        example_id, problem, reference, metadata = self.convert(row)
        return Example(
            id=str(example_id) if example_id is not None else f"{self.name}-{row.number - 1}",
            problem=problem,
            reference=reference,
            verifier=self.verifier,
            metadata=metadata,
        )


def select(examples: list[Example], limit: int | None, seed: int | None) -> list[Example]:
    """Shuffle with ``seed`` (when given), then keep the first ``limit``."""
    if limit is not None and limit < 0:
        raise TaskDataError(f"limit must be a positive number of examples or None, got {limit}")
    if seed is not None:
        examples = examples[:]
        random.Random(seed).shuffle(examples)
    return examples if limit is None else examples[:limit]


def read_file(path: str | Path, split: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows of a local jsonl / json / parquet file. When ``split`` is given and the rows have a
    ``split`` field (MBPP's file does), only the rows of that split are kept."""
    path = Path(path)
    if not path.exists():
        raise TaskDataError(f"data file {str(path)!r} does not exist")
    if path.is_dir():
        return read_hub_snapshot(path, split)
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or path.name.lower().endswith(".jsonl.gz"):
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json(path)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        raise TaskDataError(f"data file {str(path)!r}: unsupported type; use one of {', '.join(FILE_SUFFIXES)}")
    if not rows:
        raise TaskDataError(f"data file {str(path)!r} has no rows")
    return filter_split(rows, split, str(path)), str(path)


def filter_split(rows: list[dict[str, Any]], split: str | None, source: str) -> list[dict[str, Any]]:
    if split is None or not all(isinstance(row, dict) and "split" in row for row in rows):
        return rows
    kept = [row for row in rows if row["split"] == split]
    if not kept:
        seen = sorted({str(row["split"]) for row in rows})
        raise TaskDataError(f"{source}: no rows with split {split!r}; its splits are {', '.join(seen)}")
    return kept


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskDataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise TaskDataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TaskDataError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(data, dict):  # {"data": [...]} or a column-oriented {"col": [...], ...}
        lists = {key: value for key, value in data.items() if isinstance(value, list)}
        if len(lists) == 1 and all(isinstance(row, dict) for row in next(iter(lists.values()))):
            data = next(iter(lists.values()))
        elif lists and len(lists) == len(data) and len({len(value) for value in lists.values()}) == 1:
            data = [dict(zip(lists, values, strict=True)) for values in zip(*lists.values(), strict=True)]
    if not isinstance(data, list):
        raise TaskDataError(f"{path}: expected a list of objects (or use a .jsonl file with one object a line)")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise TaskDataError(f"{path}, item {number}: expected a JSON object, got {type(row).__name__}")
    return data


def read_hub(
    task: str, hub: HubSource, split: str | None, columns: dict[str, tuple[str, ...]]
) -> tuple[list[dict[str, Any]], str]:
    """Rows of a hub dataset through ``datasets`` (which uses its local cache when offline)."""
    import datasets

    split = split or hub.split
    source = f"{hub.describe()}, split {split!r}"
    try:
        dataset = datasets.load_dataset(hub.dataset, hub.config, split=split)
    except Exception as error:  # noqa: BLE001 - any failure gets the same advice
        wanted = ", ".join(f"{role} ({' or '.join(names)})" for role, names in columns.items())
        raise TaskDataError(
            f"could not load task {task!r} from the {source}: {type(error).__name__}: {error}\n"
            f"Without hub access, get the data another way and pass a local file: "
            f"tasks.load({task!r}, path='FILE.jsonl') or `rlvr tasks show {task} --path FILE.jsonl` "
            f"(jsonl, json or parquet; columns: {wanted})."
        ) from None
    return dataset.to_list(), source


def read_hub_snapshot(directory: Path, split: str | None) -> tuple[list[dict[str, Any]], str]:
    """A downloaded hub repository or a ``save_to_disk`` folder, read through ``datasets``."""
    import datasets

    source = f"data folder {str(directory)!r}"
    try:
        if (directory / "dataset_info.json").exists() or (directory / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(directory))
        else:
            loaded = datasets.load_dataset(str(directory))
    except Exception as error:  # noqa: BLE001
        raise TaskDataError(f"{source}: cannot be read as a data set ({type(error).__name__}: {error})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) == 1:
            split = next(iter(loaded))
        if split not in loaded:
            raise TaskDataError(f"{source} has splits {', '.join(loaded)}; pass split= one of them")
        loaded = loaded[split]
    rows = loaded.to_list()
    if not rows:
        raise TaskDataError(f"{source} has no rows")
    return rows, f"{source}, split {split!r}" if split else source
