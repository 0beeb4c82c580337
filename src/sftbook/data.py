"""The book's data: sentence-classification benchmarks vendored in ``data/`` (chapter 1).

``load(name)`` returns a :class:`datasets.DatasetDict` with ``train``/``validation``/``test`` splits
and :class:`datasets.ClassLabel` names; every file's sha256 is checked against ``data/SHA256SUMS``
first. ``data/README.md`` is the data card (sources, citations, counts, hashes).
At the reduced scale (``SFTBOOK_SCALE=reduced``, :func:`sftbook.env.scale`) every split is a fixed
stratified subset of at most :data:`REDUCED_SPLIT_SIZES` sentences.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from sftbook.artifacts import sha256_file
from sftbook.env import hub_reachable, scale
from sftbook.errors import DataFileError, HubUnavailableError, SftbookError, UnknownNameError

SST5_NAMES = ("very negative", "negative", "neutral", "positive", "very positive")


@dataclass(frozen=True)
class DatasetSpec:
    """How one named dataset is assembled from the vendored files."""

    description: str
    label_names: tuple[str, ...]
    files: dict[str, str]  # split -> file name in data/
    # Maps a file's label to the dataset's label (SST-3 collapses SST-5); identity when empty.
    label_map: dict[int, int] = field(default_factory=dict)
    file_label_count: int = 0  # labels the file itself uses, when label_map changes them
    validation_fraction: float = 0.0  # carved from train when no validation file exists
    hub_id: str | None = None


DATASETS: dict[str, DatasetSpec] = {
    "sst2": DatasetSpec(
        "SST-2: binary sentence-level sentiment of movie-review sentences (Socher et al., 2013)",
        ("negative", "positive"),
        {"train": "stsa.binary.train", "validation": "stsa.binary.dev", "test": "stsa.binary.test"},
        hub_id="stanfordnlp/sst2",
    ),
    "sst5": DatasetSpec(
        "SST-5: five-way fine-grained sentiment (Socher et al., 2013)",
        SST5_NAMES,
        {"train": "stsa.fine.train", "validation": "stsa.fine.dev", "test": "stsa.fine.test"},
    ),
    "sst3": DatasetSpec(
        "SST-3: SST-5 collapsed to negative / neutral / positive, the article's framing of sentiment",
        ("negative", "neutral", "positive"),
        {"train": "stsa.fine.train", "validation": "stsa.fine.dev", "test": "stsa.fine.test"},
        label_map={0: 0, 1: 0, 2: 1, 3: 2, 4: 2},
        file_label_count=5,
    ),
    "trec": DatasetSpec(
        "TREC-6: coarse question types (Li & Roth, 2002); validation carved from train",
        ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"),
        {"train": "TREC.train.all", "test": "TREC.test.all"},
        validation_fraction=0.1,
    ),
}

# Unlabeled text for pretraining (chapter 3): the labels in these files are dropped.
CORPORA: dict[str, str] = {"mr": "rt-polarity.all", "subj": "subj.all"}

# These three files are Windows-1252; the rest are UTF-8 (see data/README.md).
CP1252_FILES = frozenset({"rt-polarity.all", "subj.all", "TREC.train.all"})
CHECKSUM_FILE = "SHA256SUMS"
VALIDATION_SEED = 20240607
_LINE = re.compile(r"^(\d+) (.*\S.*)$")


def data_dir() -> Path:
    """Folder of the vendored files: ``$SFTBOOK_DATA_DIR`` or the repository's ``data/``."""
    override = os.environ.get("SFTBOOK_DATA_DIR")
    path = Path(override) if override else Path(__file__).resolve().parents[2] / "data"
    if not (path / CHECKSUM_FILE).is_file():
        raise DataFileError(
            f"No {CHECKSUM_FILE} in {path}: run from a clone of the sftbook repository "
            "(pip install -e .) or set SFTBOOK_DATA_DIR to its data/ folder."
        )
    return path


def expected_checksums(directory: Path | None = None) -> dict[str, str]:
    """File name -> sha256 from ``data/SHA256SUMS`` (the format ``sha256sum -c`` reads)."""
    directory = directory or data_dir()
    sums: dict[str, str] = {}
    for line in (directory / CHECKSUM_FILE).read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def verified_path(file_name: str, directory: Path | None = None) -> Path:
    """Path of a vendored file after checking it exists and matches its recorded sha256."""
    directory = directory or data_dir()
    sums = expected_checksums(directory)
    if file_name not in sums:
        raise DataFileError(f"{file_name} is not listed in {directory / CHECKSUM_FILE}.")
    path = directory / file_name
    if not path.is_file():
        raise DataFileError(f"Missing data file {path}; restore it with `git checkout -- data/{file_name}`.")
    actual = sha256_file(path)
    if actual != sums[file_name]:
        raise DataFileError(
            f"Checksum mismatch for {path}: expected sha256 {sums[file_name]}, got {actual}. "
            f"The file is corrupt or was edited; restore it with `git checkout -- data/{file_name}`."
        )
    return path


def read_lines(file_name: str, directory: Path | None = None) -> list[str]:
    """Decode a vendored file (Windows-1252 or UTF-8, see ``CP1252_FILES``) and split it on ``\\n`` only.

    Byte 0x85 is an ellipsis in Windows-1252 but NEL (a line break to ``str.splitlines()``) when the
    bytes are read as Latin-1, which invents extra lines; splitting on ``\\n`` is right either way.
    """
    path = verified_path(file_name, directory)
    encoding = "cp1252" if file_name in CP1252_FILES else "utf-8"
    text = path.read_bytes().decode(encoding)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_labeled(file_name: str, num_labels: int, directory: Path | None = None) -> list[tuple[int, str]]:
    """Parse ``<label> <text>`` lines, checking each label is in ``range(num_labels)``."""
    examples = []
    for number, line in enumerate(read_lines(file_name, directory), start=1):
        match = _LINE.match(line)
        if match is None:
            raise DataFileError(f"{file_name}, line {number}: expected '<label> <text>', got {line[:60]!r}.")
        label = int(match.group(1))
        if not 0 <= label < num_labels:
            raise DataFileError(f"{file_name}, line {number}: label {label} is outside 0..{num_labels - 1}.")
        examples.append((label, match.group(2).strip()))
    return examples


def stratified_pick(labels: Sequence[int], share: float, rng: random.Random) -> list[int]:
    """Indices of a random ``share`` of each label's examples (at least one each), in the order drawn.

    The one stratified sampler of the book: the TREC validation carve-out and :func:`subsample` use it.
    """
    by_label: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    chosen: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        rng.shuffle(indices)
        chosen += indices[: max(1, round(share * len(indices)))]
    return chosen


def _split_validation(examples: list[tuple[int, str]], fraction: float) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Stratified, seeded carve-out: the same validation set on every machine and every run."""
    held_out = set(stratified_pick([label for label, _ in examples], fraction, random.Random(VALIDATION_SEED)))
    train = [ex for i, ex in enumerate(examples) if i not in held_out]
    validation = [ex for i, ex in enumerate(examples) if i in held_out]
    return train, validation


def _to_dataset(examples: list[tuple[int, str]], label_names: tuple[str, ...]):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(label_names))})
    return datasets.Dataset.from_dict(
        {"text": [text for _, text in examples], "label": [label for label, _ in examples]},
        features=features,
    )


def load(name: str, source: str = "local"):
    """Load a named dataset as a ``DatasetDict`` with train, validation and test splits.

    ``name`` is one of ``sst2``, ``sst5``, ``sst3``, ``trec``. ``source="hub"`` fetches the Hugging
    Face copy instead (only ``sst2``: ``stanfordnlp/sst2``, whose train split is GLUE's 67,349
    *phrases* and whose test labels are hidden); offline that fails with one clear sentence.
    """
    if name not in DATASETS:
        raise UnknownNameError("dataset", name, sorted(DATASETS))
    spec = DATASETS[name]
    if source == "hub":
        return _load_from_hub(name, spec)
    if source != "local":
        raise UnknownNameError("source", source, ["local", "hub"])

    num_file_labels = spec.file_label_count or len(spec.label_names)
    splits = {
        split: [(spec.label_map.get(label, label), text) for label, text in read_labeled(file, num_file_labels)] for split, file in spec.files.items()
    }
    if "validation" not in splits:
        splits["train"], splits["validation"] = _split_validation(splits["train"], spec.validation_fraction)
    dataset = datasets.DatasetDict({split: _to_dataset(splits[split], spec.label_names) for split in ("train", "validation", "test")})
    if scale() == "reduced":
        for split, size in REDUCED_SPLIT_SIZES.items():
            if len(dataset[split]) > size:
                dataset[split] = subsample(dataset[split], size)
    return dataset


# At the reduced scale (make test) a split keeps at most this many sentences: enough for every chapter's
# code to run as written, few enough for the whole book to run in minutes.
REDUCED_SPLIT_SIZES = {"train": 600, "validation": 200, "test": 300}


def _load_from_hub(name: str, spec: DatasetSpec):
    if spec.hub_id is None:
        hub_names = sorted(n for n, s in DATASETS.items() if s.hub_id)
        raise UnknownNameError("dataset with a hub source", name, hub_names)
    try:
        if not hub_reachable():
            raise ConnectionError("the hub's name does not resolve or HF_HUB_OFFLINE is set")
        hub = datasets.load_dataset(spec.hub_id)
    except Exception as exc:  # offline, DNS failure, firewall, HF_HUB_OFFLINE=1: all the same to a reader
        reason = str(exc).split("\n")[0][:150] or type(exc).__name__
        raise HubUnavailableError(
            f"Could not load {spec.hub_id!r} from the Hugging Face Hub ({reason}); "
            f"use sftbook.data.load({name!r}), which reads the vendored copy in data/."
        ) from None
    return hub.rename_column("sentence", "text").remove_columns(["idx"])


def load_corpus(name: str) -> list[str]:
    """Unlabeled sentences of ``mr`` or ``subj`` (labels dropped), for pretraining in chapter 3.

    At the reduced scale, the first :data:`REDUCED_CORPUS_SIZE` sentences of each."""
    if name not in CORPORA:
        raise UnknownNameError("corpus", name, sorted(CORPORA))
    sentences = [text for _, text in read_labeled(CORPORA[name], num_labels=2)]
    return sentences[:REDUCED_CORPUS_SIZE] if scale() == "reduced" else sentences


REDUCED_CORPUS_SIZE = 3000


def subsample(split, size: int, seed: int = 0):
    """A stratified random subset of ``size`` examples of a labelled split (learning curves, chapter 12).

    Each label keeps its share (rounded); the same ``(size, seed)`` gives the same subset everywhere.
    At the reduced scale, where splits are cut short, asking for more than a split holds returns all of it.
    """
    if scale() == "reduced":
        size = min(size, len(split))
    if not 1 <= size <= len(split):
        raise SftbookError(f"Asked for {size:,} examples of a split that has {len(split):,}; pick 1..{len(split):,}.")
    labels = list(split["label"])
    rng = random.Random(seed)
    chosen = stratified_pick(labels, size / len(labels), rng)
    rng.shuffle(chosen)
    return split.select(sorted(chosen[:size]))


def read_texts(path: Path) -> list[str]:
    """A user's UTF-8 text file, one text per line (blank lines skipped) — e.g. for ``sftbook predict --file``."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"No file at {path}; pass a UTF-8 text file with one text per line.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataFileError(
            f"{path} is not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}); convert it, e.g. `iconv -f cp1252 -t utf-8 {path.name}`."
        ) from None
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise DataFileError(f"{path} has no text in it; put one text per line.")
    return texts


# ----------------------------------------------------------------------------- questions about the book


BOOK_QA_FILE = "book_qa.jsonl"


@dataclass(frozen=True)
class BookQuestion:
    question: str
    answer: str  # a span of the chapter's prose, as retrieval.book_documents renders it
    chapter: str  # where the answer is, e.g. "05_attention"


def book_questions(directory: Path | None = None) -> list[BookQuestion]:
    """The questions about chapters 1–7 that chapter 10 answers by retrieval and generation (see the data card)."""
    questions = []
    for number, line in enumerate(read_lines(BOOK_QA_FILE, directory), start=1):
        try:
            row = json.loads(line)
            questions.append(BookQuestion(row["question"], row["answer"], row["chapter"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataFileError(
                f'{BOOK_QA_FILE}: line {number} is not {{"question": ..., "answer": ..., "chapter": ...}}; '
                f"restore it with `git checkout -- data/{BOOK_QA_FILE}`."
            ) from None
    return questions


# ----------------------------------------------------------------------------- general instructions (chapter 8)

INSTRUCTIONS_FILE = "instruction-data.json"


@dataclass(frozen=True)
class InstructionSplits:
    """(prompt, reference answer) pairs: the prompt is the instruction, then its input (if any) after a blank line."""

    train: list[tuple[str, str]]
    validation: list[tuple[str, str]]
    test: list[tuple[str, str]]  # never trained on, never used to choose settings


def instructions(validation: int = 50, test: int = 100, seed: int = 0, directory: Path | None = None) -> InstructionSplits:
    """Raschka's 1,100 general instructions (see the data card), each (instruction, input) kept once (the
    file repeats 25 of them, which would otherwise leak between the splits), shuffled with ``seed`` and split."""
    try:
        rows = json.loads(verified_path(INSTRUCTIONS_FILE, directory).read_text(encoding="utf-8"))
        pairs = {}
        for row in rows:
            prompt = row["instruction"].strip() + (f"\n\n{row['input'].strip()}" if row["input"].strip() else "")
            pairs.setdefault(prompt, row["output"].strip())
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise DataFileError(
            f"{INSTRUCTIONS_FILE} is not a list of instruction/input/output objects; restore it with `git checkout -- data/{INSTRUCTIONS_FILE}`."
        ) from None
    unique = list(pairs.items())
    random.Random(seed).shuffle(unique)
    if validation + test >= len(unique):
        raise SftbookError(f"{validation} validation and {test} test instructions leave none of {len(unique)} to train on; ask for fewer.")
    return InstructionSplits(unique[validation + test :], unique[test : validation + test], unique[:test])


def read_jsonl(path: Path) -> list[tuple[str, str]]:
    """``(prompt, answer)`` pairs from a JSON-lines file with ``"prompt"`` and ``"answer"`` on every line."""
    path = Path(path)
    if not path.is_file():
        raise SftbookError(f'No file at {path}; pass a JSON-lines file with one {{"prompt": ..., "answer": ...}} per line.')
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise SftbookError(f"{path.name}: line {number} is not JSON; put one JSON object per line.") from None
        for key in ("prompt", "answer"):
            if not isinstance(row, dict) or key not in row:
                raise SftbookError(f'{path.name}: line {number} has no "{key}"; give every line a "prompt" and an "answer".')
            if not isinstance(row[key], str) or not row[key].strip():
                raise SftbookError(f"{path.name}: line {number} has an empty {key}; give it text or remove the line.")
        pairs.append((row["prompt"], row["answer"]))
    if not pairs:
        raise SftbookError(f"{path.name} has no examples; put one JSON object per line.")
    return pairs


# ----------------------------------------------------------------------------- style preferences (preference tuning)

PREFERENCES_FILE = "instruction-data-with-preference.json"


@dataclass(frozen=True)
class PreferenceSplits:
    """(prompt, chosen, rejected) triples: the same prompt, the answer to prefer and the one to avoid."""

    train: list[tuple[str, str, str]]
    validation: list[tuple[str, str, str]]
    test: list[tuple[str, str, str]]  # never trained on, never used to choose settings


def style_preferences(validation: int = 50, test: int = 100, seed: int = 0, directory: Path | None = None) -> PreferenceSplits:
    """Raschka's polite (chosen) and impolite (rejected) answers to the same instructions (see the data card),
    split exactly as :func:`instructions` splits them, so its held-out instructions stay held out here too;
    the pairs whose two answers are the same text are dropped."""
    splits = instructions(validation, test, seed, directory)
    try:
        answers = {}
        for row in json.loads(verified_path(PREFERENCES_FILE, directory).read_text(encoding="utf-8")):
            prompt = row["instruction"].strip() + (f"\n\n{row['input'].strip()}" if row["input"].strip() else "")  # as instructions() builds it
            answers.setdefault(prompt, (row["chosen"].strip(), row["rejected"].strip()))

        def triples(split: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
            return [(prompt, *answers[prompt]) for prompt, _ in split if answers[prompt][0] != answers[prompt][1]]

        return PreferenceSplits(triples(splits.train), triples(splits.validation), triples(splits.test))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise DataFileError(
            f"{PREFERENCES_FILE} is not the list of instruction/input/chosen/rejected objects that matches {INSTRUCTIONS_FILE}; "
            f"restore it with `git checkout -- data/{PREFERENCES_FILE}`."
        ) from None


# ----------------------------------------------------------------------------- extractive question answering (chapter 10)

SQUAD_FILE = "squad-dev-v1.1.json"


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    title: str  # the Wikipedia article the paragraph comes from
    context: str  # the paragraph that holds the answer
    question: str
    answers: tuple[str, ...]  # the crowdworkers' answers, each a span of ``context`` (usually three; they may repeat)


@dataclass(frozen=True)
class SquadSplits:
    """SQuAD v1.1 development questions split by article: no paragraph of a test or validation article is in train."""

    train: list[SquadQuestion]
    validation: list[SquadQuestion]
    test: list[SquadQuestion]  # never trained on, never used to choose settings


def squad(validation_articles: int = 4, test_articles: int = 4, seed: int = 0, directory: Path | None = None) -> SquadSplits:
    """The vendored SQuAD v1.1 development set (see the data card), its 48 articles shuffled with ``seed``: the
    first ``test_articles`` are the test split, the next ``validation_articles`` the validation split."""
    try:
        articles = json.loads(verified_path(SQUAD_FILE, directory).read_text(encoding="utf-8"))["data"]
        by_article = {}
        for article in articles:
            questions = []
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    for answer in qa["answers"]:
                        start = answer["answer_start"]
                        if context[start : start + len(answer["text"])] != answer["text"]:
                            raise ValueError(f"answer {answer['text']!r} of question {qa['id']} is not at its answer_start")
                    answers = tuple(answer["text"] for answer in qa["answers"])
                    questions.append(SquadQuestion(qa["id"], article["title"], context, qa["question"], answers))
            by_article[article["title"]] = questions
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DataFileError(f"{SQUAD_FILE} is not SQuAD v1.1 ({error}); restore it with `git checkout -- data/{SQUAD_FILE}`.") from None
    titles = sorted(by_article)
    random.Random(seed).shuffle(titles)
    if validation_articles + test_articles >= len(titles) or min(validation_articles, test_articles) < 1:
        raise SftbookError(
            f"{validation_articles} validation and {test_articles} test articles of {len(titles)}: each must be at least 1, "
            "with some left to train on."
        )
    split = lambda chosen: [question for title in chosen for question in by_article[title]]
    return SquadSplits(
        split(titles[validation_articles + test_articles :]),
        split(titles[test_articles : validation_articles + test_articles]),
        split(titles[:test_articles]),
    )
