"""Registry of named calibration sources: hub location, local fallback, package origin, QA templates, hold-outs."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from calmix.calib import loaders
from calmix.errors import CalmixError
from calmix.paths import shared_data

DIMENSIONS = ("General", "Commonsense", "Code", "Math", "Instruction")


@dataclass(frozen=True)
class HubRef:
    """Where a source lives on the Hugging Face hub, and how its records become text."""

    dataset: str
    config: str | None = None
    split: str = "train"
    fields: tuple[str, ...] | None = None
    template: Callable[[dict], str] | None = None
    data_files: str | None = None  # e.g. one shard of a huge corpus
    max_docs: int = loaders.HUB_MAX_DOCS  # streamed: only this many records are fetched

    def describe(self) -> str:
        return ":".join(x for x in (self.dataset, self.config or "", self.split) if x)


@dataclass(frozen=True)
class HoldOut:
    """Drop calibration records whose key matches an evaluation item (file under the data root)."""

    eval_path: str
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
    def _local_paths(self) -> list[Path] | None:
        if not self.local:
            return None
        root = self.root if self.root is not None else shared_data()
        if root is None and not all(Path(p).is_absolute() for p in self.local):
            return None
        paths = [Path(p) if Path(p).is_absolute() else Path(root) / p for p in self.local]
        return paths if all(p.exists() for p in paths) else None

    def _package_ok(self) -> tuple[bool, str]:
        if self.reader is None:
            return False, "no package origin"
        if self.package_check is not None:
            return self.package_check()
        if self.package in (None, "python"):
            return True, "python stdlib"
        import importlib.util

        mod = self.package.replace("-", "_")
        if importlib.util.find_spec(mod) is None:
            return False, f"package {self.package} not installed (pip install {self.package})"
        return True, f"package {self.package}"

    def origin(self) -> str:
        """Where documents come from here: 'local', 'package', 'hub' or 'none'."""
        if self._local_paths() is not None:
            return "local"
        if self._package_ok()[0]:
            return "package"
        if self.hub is not None and (self._hub_is_folder() or loaders.hub_reachable()[0]):
            return "hub"
        return "none"

    def _hub_is_folder(self) -> bool:
        return self.hub is not None and Path(self.hub.dataset).expanduser().is_dir()

    def origins(self) -> list[str]:
        """Every origin this source is defined for (regardless of availability here)."""
        return [o for o, ok in (("local", bool(self.local)), ("package", self.reader is not None),
                                ("hub", self.hub is not None)) if ok]

    def available(self) -> tuple[bool, str]:
        """(True, where it loads from) or (False, why not)."""
        paths = self._local_paths()
        if paths is not None:
            root = self.root if self.root is not None else shared_data()
            return True, "local " + ", ".join(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths)
        why = []
        if self.local:
            why.append("no data root with " + self.local[0] if (self.root or shared_data()) is None
                       else f"{self.local[0]} missing under data root")
        ok, msg = self._package_ok()
        if ok:
            return True, msg
        if self.reader is not None:
            why.append(msg)
        if self._hub_is_folder():
            return True, f"hub-format folder {self.hub.dataset}"
        if self.hub is not None:
            ok, msg = loaders.hub_reachable()
            if ok:
                return True, f"hub {self.hub.describe()}"
            why.append(f"{msg} for hub {self.hub.describe()}")
        return False, "; ".join(why) or "no origin defined"

    @property
    def version(self) -> str:
        """A string that changes when the data behind this source changes (for cache keys)."""
        org = self.origin()
        if org == "local":
            return "local:" + "|".join(loaders.path_version(p) for p in self._local_paths())
        if org == "package":
            if self.package_version_fn is not None:
                return f"package:{self.package_version_fn()}"
            if self.package in (None, "python"):
                return f"python:{sys.version.split()[0]}"
            return f"package:{self.package}=={loaders.package_version(self.package)}"
        if org == "hub":
            if self._hub_is_folder():
                return f"hub-folder:{self.hub.describe()}:{loaders.path_version(self.hub.dataset)}"
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
        org = self.origin()
        if org == "none":
            raise CalmixError(f"source {self.name} is not available here: {self.available()[1]}")
        if org == "local":
            docs = self._load_local()
        elif org == "package":
            docs = _cached_package_docs(self)
        else:
            h = self.hub
            docs = loaders.load_hub(h.dataset, h.config, h.split, h.fields, h.template, limit=h.max_docs,
                                    data_files=h.data_files)
        docs = [d for d in docs if d and d.strip()]
        if not docs:
            raise CalmixError(f"source {self.name} ({org}) yielded no text documents")
        return docs

    def _held_out_keys(self) -> set[str]:
        root = self.root if self.root is not None else shared_data()
        keys: set[str] = set()
        for h in self.holdout:
            path = Path(root) / h.eval_path if root is not None else None
            if path is not None and path.exists():
                keys |= {_norm(h.eval_key(rec)) for rec, _ in loaders.iter_records(path) if isinstance(rec, dict)}
        return keys

    def _load_local(self) -> list[str]:
        held = self._held_out_keys()
        docs: list[str] = []
        for path in self._local_paths():
            for f in loaders.list_data_files(path):
                for rec, where in loaders.iter_records(f):
                    if held and isinstance(rec, dict) and _norm(self.holdout[0].calib_key(rec)) in held:
                        continue
                    if self.local_template is not None and isinstance(rec, dict):
                        text = self.local_template(rec)
                    else:
                        text = loaders.record_text(rec, self.local_fields, where)
                    docs.append(text)
        return docs


def _cached_package_docs(src: Source) -> list[str]:
    """Package documents, memoised on disk (calmix cache) by source name and version."""
    import hashlib
    import json

    from calmix.paths import cache_dir
    from calmix.runrecord import write_json_atomic

    key = hashlib.sha256(f"{src.name}|{src.version}|{DOCS_FORMAT}".encode()).hexdigest()[:20]
    path = cache_dir("calib", "docs") / f"{src.name}-{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    docs = src.reader()
    write_json_atomic(path, docs)
    return docs


DOCS_FORMAT = 3  # bump whenever a package reader or template changes (invalidates the docs cache)


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split()).rstrip("?. ")


# ------------------------------------------------------------------------------------- templates

def qa(q: str, a: str) -> str:
    """The QA template used across sources: question, then the worked answer."""
    return f"Question: {q.strip()}\nAnswer: {a.strip()}"


_ADAPTER_Q = re.compile(r"question:\s*(.*?)\n\nAnswer1:", re.S)
_ADAPTER_BOOL = re.compile(r"question:\s*(.*?)\n\nAnswer format", re.S)


def adapters_question(rec: dict) -> str:
    """The question text of an LLM-Adapters multiple-choice or true/false record."""
    ins = rec.get("instruction", "")
    m = _ADAPTER_Q.search(ins) or _ADAPTER_BOOL.search(ins)
    return m.group(1).strip() if m else ins


def adapters_mc(rec: dict) -> str:
    """LLM-Adapters ARC/OBQA/BoolQ record as question, options, and the correct option's text."""
    ins = rec["instruction"]
    m = _ADAPTER_Q.search(ins)
    if not m:  # true/false format (BoolQ)
        return qa(adapters_question(rec), rec.get("answer", ""))
    opts_text = ins[m.end() - len("Answer1:"):].split("\n\nAnswer format")[0]
    opts = [o.strip() for o in re.split(r"Answer\d+:", opts_text) if o.strip()]
    ans = rec.get("answer", "")
    idx = int(ans[len("answer"):]) - 1 if ans.startswith("answer") and ans[6:].isdigit() else -1
    letters = "ABCDEFGH"
    body = m.group(1).strip() + "\n" + "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(opts))
    answer = f"{letters[idx]}. {opts[idx]}" if 0 <= idx < len(opts) else ans
    return qa(body, answer)


def hub_arc(rec: dict) -> str:
    ch = rec["choices"]
    opts = "\n".join(f"{lab}. {t}" for lab, t in zip(ch["label"], ch["text"]))
    gold = dict(zip(ch["label"], ch["text"])).get(rec["answerKey"], rec["answerKey"])
    return qa(f"{rec['question']}\n{opts}", f"{rec['answerKey']}. {gold}")


def hub_obqa(rec: dict) -> str:
    return hub_arc({**rec, "question": rec["question_stem"]})


def dialogue(rec: dict) -> str:
    """A DailyDialog record as alternating speaker turns."""
    turns = rec.get("dialogue") or rec.get("dialog") or rec.get("utterances") or []
    if not turns:
        return loaders.record_text(rec)
    lines = [(t["text"] if isinstance(t, dict) else str(t)).strip() for t in turns]
    return "\n".join(f"{'AB'[i % 2]}: {t}" for i, t in enumerate(lines) if t)


def instruction(rec: dict) -> str:
    """Alpaca-style record: instruction, optional input, response."""
    out = rec.get("output") or rec.get("response") or ""
    inp = rec.get("input") or ""
    head = rec["instruction"].strip() + (f"\n\nInput:\n{inp.strip()}" if inp.strip() else "")
    return f"Instruction:\n{head}\n\nResponse:\n{out.strip()}"


def _first_line_question(rec: dict) -> str:
    q = rec.get("query", "")
    m = re.search(r"Question:\s*(.*?)(\n|$)", q)
    return m.group(1) if m else q


def _bigbench_ok() -> tuple[bool, str]:
    if loaders.bigbench_sdist() is None:
        return False, "BIG-bench sdist not in the calmix cache (pip download --no-deps --no-binary :all: bigbench==1.0.0 -d ~/.cache/calmix/bigbench)"
    return True, "package bigbench==1.0.0 sdist (calmix cache)"


def _bb(task: str, template: Callable[[dict], str]) -> Callable[[], list[str]]:
    return lambda: loaders.bigbench_docs(task, template)


def bb_strategyqa(ex: dict) -> str:
    return qa(ex["input"], ex.get("target") or max(ex["target_scores"], key=ex["target_scores"].get))


def bb_topical_chat_docs() -> list[str]:
    """Topical-Chat conversations: the longest prefix of each conversation plus its reply (no repeated prefixes)."""
    best: dict[str, dict] = {}
    for ex in loaders.bigbench_task_json("topical_chat")["examples"]:
        key = ex.get("comment") or ex["input"][:80]
        if key not in best or len(ex["input"]) > len(best[key]["input"]):
            best[key] = ex
    return [f"{ex['input']} agent_B: {_first(ex['target'])}".replace('" agent_', '"\nagent_')
            for _, ex in sorted(best.items())]


def _first(target) -> str:
    return target[0] if isinstance(target, list) else str(target)


def bb_ropes_story(ex: dict) -> str:
    return f"{ex['input'].strip()}\n\nStory: {_first(ex['target']).strip()}"


# ---------------------------------------------------------------------------------------- registry

def _rg(tasks: tuple[str, ...], size: int = 1000) -> Callable[[], list[str]]:
    return lambda: loaders.reasoning_gym_docs(tasks, size=size)


RG_LOGIC = ("syllogism", "family_relationships", "knights_knaves", "leg_counting", "time_intervals", "calendar_arithmetic")
RG_ALGEBRA = ("simple_equations", "fraction_simplification", "prime_factorization", "decimal_arithmetic", "basic_arithmetic")
RG_LANGUAGE = ("sentence_reordering", "word_sorting", "letter_counting", "spell_backward")

CS = "calib/commonsense_qa/"

HO_ARC_E = HoldOut("eval/arc_easy/test.jsonl", lambda r: r["question"], adapters_question)
HO_ARC_C = HoldOut("eval/arc_challenge/test.jsonl", lambda r: r["question"], adapters_question)
HO_BOOLQ = HoldOut("eval/boolq/dev.jsonl", _first_line_question, adapters_question)
HO_OBQA = HoldOut("eval/openbookqa/test.jsonl", lambda r: r["query"], adapters_question)
HO_GSM8K = HoldOut("eval/gsm8k/test.jsonl", lambda r: r["question"], lambda r: r["question"])

_DEFS: list[Source] = [
    # General
    Source("c4", "General", "C4 en web text (first shard, SparseGPT/Wanda convention)",
           hub=HubRef("allenai/c4", None, "train", ("text",), data_files="en/c4-train.00000-of-01024.json.gz"),
           local=("calib/c4/c4-train.00000-of-01024.first1000.jsonl",)),
    Source("wikitext2", "General", "WikiText-2 (local: tokenised valid split, so test perplexity is not leaked)",
           hub=HubRef("Salesforce/wikitext", "wikitext-2-raw-v1", "train", ("text",)),
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
           package="python", reader=loaders.pydoc_topics),
    Source("stdlib-docstrings", "General", "Docstrings of the Python standard library (technical prose)",
           package="python", reader=loaders.stdlib_docstrings),
    Source("licences", "General", "Licence texts shipped in installed Python distributions (legal prose)",
           package="python", reader=loaders.licence_texts, package_version_fn=loaders.licence_version),
    Source("bb-topical-chat", "General", "BIG-bench topical_chat: open-domain conversations (dialogue)",
           package="bigbench", reader=bb_topical_chat_docs, package_check=_bigbench_ok,
           package_version_fn=lambda: "bigbench==1.0.0"),
    # Instruction
    Source("bb-ropes-stories", "Instruction", "BIG-bench natural_instructions ROPES story generation (background + story)",
           package="bigbench", reader=_bb("natural_instructions/subtask059_ropes_story_generation", bb_ropes_story),
           package_check=_bigbench_ok, package_version_fn=lambda: "bigbench==1.0.0"),
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
           package="python", reader=loaders.stdlib_code),
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
           package="bigbench", reader=_bb("strategyqa", bb_strategyqa), package_check=_bigbench_ok,
           package_version_fn=lambda: "bigbench==1.0.0"),
    # Math
    Source("gsm8k", "Math", "GSM8K train: question + worked solution (test split never used)",
           hub=HubRef("openai/gsm8k", "main", "train", template=lambda r: qa(r["question"], r["answer"])),
           local=("eval/gsm8k/train.jsonl",), local_template=lambda r: qa(r["question"], r["answer"]),
           holdout=(HO_GSM8K,)),
    Source("metamath", "Math", "MetaMathQA (query + response), the paper's best single source; hub only",
           hub=HubRef("meta-math/MetaMathQA", None, "train", template=lambda r: qa(r["query"], r["response"]))),
    Source("math", "Math", "MATH (Hendrycks) train, algebra subject: problem + solution; hub only",
           hub=HubRef("EleutherAI/hendrycks_math", "algebra", "train",
                      template=lambda r: qa(r["problem"], r["solution"]))),
    Source("gsm-symbolic", "Math", "reasoning-gym gsm_symbolic, question + chain of thought; templates reserved for evaluation excluded",
           package="reasoning-gym", reader=loaders.gsm_symbolic_docs),
    Source("rg-algebra", "Math", "reasoning-gym arithmetic/algebra problems with answers: " + ", ".join(RG_ALGEBRA),
           package="reasoning-gym", reader=_rg(RG_ALGEBRA)),
]

SOURCES: dict[str, Source] = {s.name: s for s in _DEFS}


def get_source(name: str) -> Source:
    """The registered source `name`, or a CalmixError listing the known ones."""
    try:
        return SOURCES[name]
    except KeyError:
        raise CalmixError(f"unknown calibration source {name!r}; known: {', '.join(sorted(SOURCES))}") from None


def available_sources() -> list[str]:
    """Names of the sources that can load here, in registry order."""
    return [n for n, s in SOURCES.items() if s.available()[0]]
