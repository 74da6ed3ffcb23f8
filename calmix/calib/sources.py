"""Registry of named calibration sources: hub location, local fallback, package origin, QA templates, hold-outs."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from calmix import fingerprint
from calmix.calib.templates import (adapters_mc, adapters_question, bb, bb_ropes_story, bb_strategyqa,
                                    bb_topical_chat_docs, bigbench_ok, dialogue, first_line_question, hub_arc,
                                    hub_obqa, instruction, qa)
from calmix.data import files, hub, packages, resolve
from calmix.data.reserved import WIKITEXT2_HUB, eval_file, eval_path
from calmix.errors import CalmixError
from calmix.paths import cache_dir, shared_data
from calmix.registry import Registry
from calmix.runrecord import write_json_atomic


@dataclass(frozen=True)
class HubRef:
    """Where a source lives on the Hugging Face hub, and how its records become text."""

    dataset: str
    config: str | None = None
    split: str = "train"
    fields: tuple[str, ...] | None = None
    template: Callable[[dict], str] | None = None
    data_files: str | None = None  # e.g. one shard of a huge corpus
    max_docs: int = hub.HUB_MAX_DOCS  # streamed: only this many records are fetched

    def describe(self) -> str:
        return ":".join(x for x in (self.dataset, self.config or "", self.split) if x)


@dataclass(frozen=True)
class HoldOut:
    """Drop calibration records whose key matches an item of an evaluation split (a file under the data root)."""

    task: str
    split: str
    eval_key: Callable[[dict], str]
    calib_key: Callable[[dict], str]


@dataclass
class Source:
    """A named calibration source: documents from a local file, an installed package, or the hub."""

    name: str
    dimension: str
    description: str
    hub: HubRef | None = None
    local: tuple[str, ...] = ()  # files/folders relative to the data root
    local_template: Callable[[dict], str] | None = None
    local_fields: tuple[str, ...] | None = None
    package: str | None = None  # distribution that embeds the data ("python" = the interpreter)
    reader: Callable[[], list[str]] | None = None  # package reader
    package_version_fn: Callable[[], str] | None = None
    package_check: Callable[[], tuple[bool, str]] | None = None  # custom availability test of the package data
    holdout: tuple[HoldOut, ...] = ()
    root: Path | None = None  # data root override (None = calmix.paths.shared_data())
    in_all: bool = True  # part of the `all` preset (False for composites of other sources)
    _docs: list[str] | None = field(default=None, repr=False, compare=False)
    _docs_key: str | None = field(default=None, repr=False, compare=False)

    # ---- where it loads from
    def _root(self) -> Path | None:
        return self.root if self.root is not None else shared_data()

    def _local_paths(self) -> list[Path] | None:
        if not self.local:
            return None
        root = self._root()
        if root is None and not all(Path(p).is_absolute() for p in self.local):
            return None
        paths = [Path(p) if Path(p).is_absolute() else Path(root) / p for p in self.local]
        return paths if all(p.exists() for p in paths) else None

    def _local_ok(self) -> tuple[bool, str]:
        paths = self._local_paths()
        if paths is not None:
            root = self._root()
            return True, "local " + ", ".join(str(p.relative_to(root)) if root is not None and p.is_relative_to(root)
                                              else str(p) for p in paths)
        if self._root() is None:
            return False, "no data root with " + self.local[0]
        return False, f"{self.local[0]} missing under data root"

    def _package_ok(self) -> tuple[bool, str]:
        if self.package_check is not None:
            return self.package_check()
        if self.package in (None, "python"):
            return True, "python stdlib"
        import importlib.util

        mod = self.package.replace("-", "_")
        if importlib.util.find_spec(mod) is None:
            return False, f"package {self.package} not installed (pip install {self.package})"
        return True, f"package {self.package}"

    def _hub_is_folder(self) -> bool:
        return self.hub is not None and Path(self.hub.dataset).expanduser().is_dir()

    def _hub_ok(self) -> tuple[bool, str]:
        if self._hub_is_folder():
            return True, f"hub-format folder {self.hub.dataset}"
        ok, msg = hub.hub_reachable()
        return (True, f"hub {self.hub.describe()}") if ok else (False, f"{msg} for hub {self.hub.describe()}")

    def places(self) -> list[resolve.Place]:
        """The places this source is defined for, in resolution order (local, package, hub)."""
        out = []
        if self.local:
            out.append(resolve.Place("local", self._local_ok, self._load_local))
        if self.reader is not None:
            out.append(resolve.Place("package", self._package_ok, lambda: _cached_package_docs(self),
                                     label=f"package {self.package}"))
        if self.hub is not None:
            h = self.hub
            out.append(resolve.Place("hub", self._hub_ok, lambda: hub.load_hub(
                h.dataset, h.config, h.split, h.fields, h.template, limit=h.max_docs, data_files=h.data_files)))
        return out

    def origin(self) -> str:
        """Where documents come from here: 'local', 'package', 'hub' or 'none'."""
        place, _ = resolve.pick(self.places())
        return place.origin if place is not None else "none"

    def origins(self) -> list[str]:
        """Every origin this source is defined for (regardless of availability here)."""
        return [p.origin for p in self.places()]

    def available(self) -> tuple[bool, str]:
        """(True, where it loads from) or (False, why not)."""
        place, msg = resolve.pick(self.places())
        return place is not None, msg

    @property
    def version(self) -> str:
        """A string that changes when the data behind this source changes (for cache keys)."""
        org = self.origin()
        if org == "local":
            return "local:" + "|".join(files.path_version(p) for p in self._local_paths())
        if org == "package":
            if self.package_version_fn is not None:
                return f"package:{self.package_version_fn()}"
            if self.package in (None, "python"):
                return f"python:{sys.version.split()[0]}"
            return f"package:{self.package}=={packages.package_version(self.package)}"
        if org == "hub":
            if self._hub_is_folder():
                return f"hub-folder:{self.hub.describe()}:{files.path_version(self.hub.dataset)}"
            return f"hub:{self.hub.describe()}"
        return "unavailable"

    # ---- documents
    def documents(self, limit: int | None = None) -> list[str]:
        """The source's text documents in a fixed order (evaluation items held out)."""
        key = self.version
        if self._docs is None or self._docs_key != key:
            self._docs = self._load()
            self._docs_key = key
        return list(self._docs if limit is None else self._docs[:limit])

    def _load(self) -> list[str]:
        try:
            place, docs = resolve.load(self.places())
        except resolve.Unavailable as err:
            raise CalmixError(f"source {self.name} is not available here: {err}") from None
        docs = [d for d in docs if d and d.strip()]
        if not docs:
            raise CalmixError(f"source {self.name} ({place.origin}) yielded no text documents")
        return docs

    def _held_out_keys(self) -> set[str]:
        keys: set[str] = set()
        for h in self.holdout:
            path = eval_path(h.task, h.split, self._root())
            if path is not None and path.exists():
                keys |= {_norm(h.eval_key(rec)) for rec, _ in files.iter_records(path) if isinstance(rec, dict)}
        return keys

    def _load_local(self) -> list[str]:
        held = self._held_out_keys()
        docs: list[str] = []
        for path in self._local_paths():
            for f in files.list_data_files(path):
                for rec, where in files.iter_records(f):
                    if held and isinstance(rec, dict) and _norm(self.holdout[0].calib_key(rec)) in held:
                        continue
                    if self.local_template is not None and isinstance(rec, dict):
                        text = self.local_template(rec)
                    else:
                        text = files.record_text(rec, self.local_fields, where)
                    docs.append(text)
        return docs


DOCS_FORMAT = 3  # bump whenever a package reader or template changes (invalidates the docs cache)


def _cached_package_docs(src: Source) -> list[str]:
    """Package documents, memoised on disk (calmix cache) by source name and version."""
    key = fingerprint.digest(f"{src.name}|{src.version}|{DOCS_FORMAT}", 20)
    path = cache_dir("calib", "docs") / f"{src.name}-{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    docs = src.reader()
    write_json_atomic(path, docs)
    return docs


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split()).rstrip("?. ")


# ---------------------------------------------------------------------------------------- registry

def _rg(tasks: tuple[str, ...], size: int = 1000) -> Callable[[], list[str]]:
    return lambda: packages.reasoning_gym_docs(tasks, size=size)


RG_LOGIC = ("syllogism", "family_relationships", "knights_knaves", "leg_counting", "time_intervals", "calendar_arithmetic")
RG_ALGEBRA = ("simple_equations", "fraction_simplification", "prime_factorization", "decimal_arithmetic", "basic_arithmetic")
RG_LANGUAGE = ("sentence_reordering", "word_sorting", "letter_counting", "spell_backward")

CS = "calib/commonsense_qa/"

HO_ARC_E = HoldOut("arc_easy", "test", lambda r: r["question"], adapters_question)
HO_ARC_C = HoldOut("arc_challenge", "test", lambda r: r["question"], adapters_question)
HO_BOOLQ = HoldOut("boolq", "validation", first_line_question, adapters_question)
HO_OBQA = HoldOut("openbookqa", "test", lambda r: r["query"], adapters_question)
HO_GSM8K = HoldOut("gsm8k", "test", lambda r: r["question"], lambda r: r["question"])

_DEFS: list[Source] = [
    # General
    Source("c4", "General", "C4 en web text (first shard, SparseGPT/Wanda convention)",
           hub=HubRef("allenai/c4", None, "train", ("text",), data_files="en/c4-train.00000-of-01024.json.gz"),
           local=("calib/c4/c4-train.00000-of-01024.first1000.jsonl",)),
    Source("wikitext2", "General", "WikiText-2 (local: tokenised valid split, so test perplexity is not leaked)",
           hub=HubRef(*WIKITEXT2_HUB, "train", ("text",)),
           local=("calib/wikitext2/wiki.valid.tokens",)),
    Source("pile", "General", "The Pile validation sample (web, science, code, legal)",
           hub=HubRef("NeelNanda/pile-10k", None, "train", ("text",)),
           local=("calib/pile/pile-rnd512.val.jsonl",)),
    Source("pubmedqa", "General", "PubMedQA labeled abstracts with question and answer (biomedical)",
           hub=HubRef("qiaojin/PubMedQA", "pqa_labeled", "train",
                      template=lambda r: qa("\n".join(r["context"]["contexts"]) + "\n" + r["question"],
                                            r["long_answer"] + " " + r["final_decision"])),
           local=("calib/pubmedqa/pubmed_qa_labeled.jsonl",),
           local_template=lambda r: r["context"] + r["continuation"]),
    Source("tinyshakespeare", "General", "Tiny Shakespeare (books/literature)",
           hub=HubRef("Trelis/tiny-shakespeare", None, "train"),
           local=("calib/tinyshakespeare/input.txt",)),
    Source("dailydialog", "General", "DailyDialog conversations (dialogue)",
           hub=HubRef("roskoN/dailydialog", None, "train", template=dialogue),
           local=("calib/dailydialog",), local_template=dialogue),
    Source("pydoc-topics", "General", "Python language reference prose (pydoc_data.topics, ships with Python)",
           package="python", reader=packages.pydoc_topics),
    Source("stdlib-docstrings", "General", "Docstrings of the Python standard library (technical prose)",
           package="python", reader=packages.stdlib_docstrings),
    Source("licences", "General", "Licence texts shipped in installed Python distributions (legal prose)",
           package="python", reader=packages.licence_texts, package_version_fn=packages.licence_version),
    Source("bb-topical-chat", "General", "BIG-bench topical_chat: open-domain conversations (dialogue)",
           package="bigbench", reader=bb_topical_chat_docs, package_check=bigbench_ok,
           package_version_fn=lambda: "bigbench==1.0.0"),
    # Instruction
    Source("bb-ropes-stories", "Instruction", "BIG-bench natural_instructions ROPES story generation (background + story)",
           package="bigbench", reader=bb("natural_instructions/subtask059_ropes_story_generation", bb_ropes_story),
           package_check=bigbench_ok, package_version_fn=lambda: "bigbench==1.0.0"),
    Source("alpaca", "Instruction", "Stanford Alpaca instructions with responses (local: 1k subset)",
           hub=HubRef("tatsu-lab/alpaca", None, "train", template=instruction),
           local=("calib/alpaca/alpaca_data_1k.jsonl",), local_template=instruction),
    Source("rg-language", "Instruction", "reasoning-gym word tasks with answers: " + ", ".join(RG_LANGUAGE),
           package="reasoning-gym", reader=_rg(RG_LANGUAGE)),
    # Code
    Source("codealpaca", "Code", "CodeAlpaca code instructions with solutions (local: 2k + new 4.5k)",
           hub=HubRef("sahil2801/CodeAlpaca-20k", None, "train", template=instruction),
           local=("calib/codealpaca",), local_template=instruction),
    Source("stdlib", "Code", "Python standard library source code (no test folders)",
           package="python", reader=packages.stdlib_code),
    # Commonsense
    Source("arc-easy", "Commonsense", "ARC-Easy train (question, options, answer); test repeats dropped",
           hub=HubRef("allenai/ai2_arc", "ARC-Easy", "train", template=hub_arc),
           local=(CS + "arc_easy_train.jsonl",), local_template=adapters_mc,
           holdout=(HO_ARC_E,)),
    Source("arc-challenge", "Commonsense", "ARC-Challenge train (question, options, answer)",
           hub=HubRef("allenai/ai2_arc", "ARC-Challenge", "train", template=hub_arc),
           local=(CS + "arc_challenge_train.jsonl",), local_template=adapters_mc,
           holdout=(HO_ARC_C,)),
    Source("boolq", "Commonsense", "BoolQ train questions with true/false answers",
           hub=HubRef("google/boolq", None, "train",
                      template=lambda r: r["passage"] + "\n" + qa(r["question"] + "?", str(r["answer"]).lower())),
           local=(CS + "boolq_train.jsonl",), local_template=adapters_mc,
           holdout=(HO_BOOLQ,)),
    Source("obqa", "Commonsense", "OpenBookQA train (question, options, answer)",
           hub=HubRef("allenai/openbookqa", "main", "train", template=hub_obqa),
           local=(CS + "openbookqa_train.jsonl",), local_template=adapters_mc,
           holdout=(HO_OBQA,)),
    Source("commonsense", "Commonsense", "ARC-E + ARC-C + BoolQ + OBQA train splits together (local only)",
           local=(CS,), local_template=adapters_mc, holdout=(HO_ARC_E, HO_ARC_C, HO_BOOLQ, HO_OBQA), in_all=False),
    Source("csqa", "Commonsense", "CommonsenseQA train (question, options, answer); hub only",
           hub=HubRef("tau/commonsense_qa", None, "train", template=hub_arc)),
    Source("winogrande", "Commonsense", "WinoGrande xl train, sentence with the right option filled in; hub only",
           hub=HubRef("allenai/winogrande", "winogrande_xl", "train",
                      template=lambda r: r["sentence"].replace("_", r["option" + r["answer"]] if r["answer"] else "_"))),
    Source("hellaswag", "Commonsense", "HellaSwag train, context with the gold ending; hub only",
           hub=HubRef("Rowan/hellaswag", None, "train",
                      template=lambda r: r["ctx"] + " " + r["endings"][int(r["label"])] if r["label"] != "" else r["ctx"])),
    Source("rg-logic", "Commonsense", "reasoning-gym logic/commonsense puzzles with answers: " + ", ".join(RG_LOGIC),
           package="reasoning-gym", reader=_rg(RG_LOGIC)),
    Source("bb-strategyqa", "Commonsense", "BIG-bench StrategyQA: yes/no questions with a reasoning explanation",
           package="bigbench", reader=bb("strategyqa", bb_strategyqa), package_check=bigbench_ok,
           package_version_fn=lambda: "bigbench==1.0.0"),
    # Math
    Source("gsm8k", "Math", "GSM8K train: question + worked solution (test split never used)",
           hub=HubRef("openai/gsm8k", "main", "train", template=lambda r: qa(r["question"], r["answer"])),
           local=(eval_file("gsm8k", "train"),), local_template=lambda r: qa(r["question"], r["answer"]),
           holdout=(HO_GSM8K,)),
    Source("metamath", "Math", "MetaMathQA (query + response), the paper's best single source; hub only",
           hub=HubRef("meta-math/MetaMathQA", None, "train", template=lambda r: qa(r["query"], r["response"]))),
    Source("math", "Math", "MATH (Hendrycks) train, algebra subject: problem + solution; hub only",
           hub=HubRef("EleutherAI/hendrycks_math", "algebra", "train",
                      template=lambda r: qa(r["problem"], r["solution"]))),
    Source("gsm-symbolic", "Math", "reasoning-gym gsm_symbolic, question + chain of thought; templates reserved for evaluation excluded",
           package="reasoning-gym", reader=packages.gsm_symbolic_docs),
    Source("rg-algebra", "Math", "reasoning-gym arithmetic/algebra problems with answers: " + ", ".join(RG_ALGEBRA),
           package="reasoning-gym", reader=_rg(RG_ALGEBRA)),
]


SOURCES: Registry[Source] = Registry("calibration source")
for _src in _DEFS:
    SOURCES.add(_src.name, _src)
get_source = SOURCES.get
