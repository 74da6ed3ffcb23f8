"""The evaluation tasks: each names its data (shared files, package, hub), prompt format, scorer and dimension."""

from __future__ import annotations

from calmix.data.dimensions import DIMENSIONS  # noqa: F401  (re-exported: the dimensions tasks are grouped by)
from calmix.data.packages import gsm_symbolic_eval_rows, human_eval_problems
from calmix.data.reserved import GSM_SYMBOLIC_EVAL_TEMPLATES, WIKITEXT2_HUB, eval_file
from calmix.evals import parsers as P
from calmix.evals.formats import (fmt_arc, fmt_bigbench_mc, fmt_boolq, fmt_cloze_probe, fmt_copa, fmt_gsm8k_gen,
                                  fmt_gsm8k_probe, fmt_hellaswag, fmt_humaneval_gen, fmt_humaneval_probe, fmt_mbpp_gen,
                                  fmt_mmlu, fmt_obqa, fmt_piqa, fmt_qa_probe, fmt_siqa, fmt_text_probe, fmt_winogrande,
                                  wikitext_passages)
from calmix.evals.records import Hub, Source, bigbench_cloze, bigbench_mc
from calmix.evals.task import TASKS, Task, build_items, get_task, register  # noqa: F401  (re-exported)

__all__ = ["DIMENSIONS", "GSM_SYMBOLIC_EVAL_TEMPLATES", "TASKS", "Task", "build_items", "get_task", "register"]


def _shared(task: str, split: str, parse=None, hub: Hub | None = None, hub_parse=None, package=None,
            post=None) -> Source:
    """A split read from its evaluation file under the data root, else the package, else the hub."""
    return Source(local=eval_file(task, split), local_parse=parse, hub=hub, hub_parse=hub_parse, package=package,
                  post=post)


def _mbpp_prompt_split(rows: list[dict]) -> list[dict]:
    """MBPP's few-shot 'prompt' split: task ids 1-10 (google-research mbpp README)."""
    return [r for r in rows if 1 <= int(r["task_id"]) <= 10]


_arc_e = {"test": _shared("arc_easy", "test", P.arc_local, Hub("allenai/ai2_arc", "ARC-Easy", "test"), P.arc_hub)}
_arc_c = {"test": _shared("arc_challenge", "test", P.arc_local, Hub("allenai/ai2_arc", "ARC-Challenge", "test"), P.arc_hub)}
_hella = {"validation": _shared("hellaswag", "validation", None, Hub("Rowan/hellaswag", None, "validation"), P.hellaswag_hub)}
_piqa = {"validation": _shared("piqa", "validation", None, Hub("baber/piqa", None, "validation"), P.piqa_hub)}
_wino = {"validation": _shared("winogrande", "validation", None, Hub("allenai/winogrande", "winogrande_xl", "validation"),
                               P.wino_hub)}
_boolq = {"validation": _shared("boolq", "validation", P.boolq_local, Hub("aps/super_glue", "boolq", "validation"),
                                P.boolq_hub)}
_obqa = {"test": _shared("openbookqa", "test", P.obqa_local, Hub("allenai/openbookqa", "main", "test"), P.obqa_hub)}
_siqa = {"validation": _shared("siqa", "validation", P.arc_local, Hub("allenai/social_i_qa", None, "validation"),
                               P.siqa_hub)}
_copa = {"validation": _shared("copa", "validation", None, Hub("aps/super_glue", "copa", "validation"), P.copa_hub)}
_mmlu_s = {"test": _shared("mmlu", "test", P.mmlu, Hub("cais/mmlu", "all", "test"), P.mmlu),
           "dev": _shared("mmlu", "dev", P.mmlu, Hub("cais/mmlu", "all", "dev"), P.mmlu)}
_gsm = {"test": _shared("gsm8k", "test", None, Hub("openai/gsm8k", "main", "test")),
        "train": _shared("gsm8k", "train", None, Hub("openai/gsm8k", "main", "train"))}
_he = {"test": _shared("humaneval", "test", None, Hub("openai/openai_humaneval", None, "test"), package=human_eval_problems)}
_mbpp = {"test": _shared("mbpp", "test", None, Hub("google-research-datasets/mbpp", "full", "test")),
         "prompt": _shared("mbpp", "prompt", hub=Hub("google-research-datasets/mbpp", "full", "prompt"),
                           post=_mbpp_prompt_split)}
_wiki = {"test": _shared("wikitext2", "test", None, Hub(*WIKITEXT2_HUB, "test"))}
_lambada = {"test": _shared("lambada", "test", None, Hub("EleutherAI/lambada_openai", "default", "test"), P.lambada_hub)}

# Item counts of the small-offline tasks, chosen by the CI width they buy within ~30 s per cell (the measurements
# are in calmix.evals.suites, beside the small-offline declaration); social_iqa_mc is not in that suite.
SMALL_OFFLINE_ITEMS = {"wikihow_step_mc": 80, "social_iqa_mc": 80, "humaneval_probe_pkg": 16, "gsm_symbolic_probe": 12}

CODE_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")

for _t in [
    # Commonsense, multiple choice (zero-shot)
    Task("arc_easy", "Commonsense", "mc", "test", _arc_e, fmt_arc, "acc_norm", default_limit=100),
    Task("arc_challenge", "Commonsense", "mc", "test", _arc_c, fmt_arc, "acc_norm", default_limit=100),
    Task("hellaswag", "Commonsense", "mc", "validation", _hella, fmt_hellaswag, "acc_norm", default_limit=100),
    Task("piqa", "Commonsense", "mc", "validation", _piqa, fmt_piqa, "acc_norm", default_limit=100),
    Task("winogrande", "Commonsense", "mc", "validation", _wino, fmt_winogrande, "acc", default_limit=100),
    Task("boolq", "Commonsense", "mc", "validation", _boolq, fmt_boolq, "acc", default_limit=100),
    Task("openbookqa", "Commonsense", "mc", "test", _obqa, fmt_obqa, "acc_norm", default_limit=100),
    Task("siqa", "Commonsense", "mc", "validation", _siqa, fmt_siqa, "acc", default_limit=100),
    Task("copa", "Commonsense", "mc", "validation", _copa, fmt_copa, "acc", default_limit=100),
    # General
    Task("mmlu", "General", "mc", "test", _mmlu_s, fmt_mmlu, "acc", num_fewshot=5, fewshot_split="dev",
         fewshot_by="subject", default_limit=None),
    Task("wikitext2_probe", "General", "probe", "test", _wiki, fmt_text_probe, "nll", default_limit=40,
         prepare=wikitext_passages, description="NLL per token of held-out WikiText-2 test paragraphs"),
    Task("lambada_probe", "General", "probe", "test", _lambada, fmt_cloze_probe, "nll", default_limit=50,
         description="NLL per token of the LAMBADA target word given its passage"),
    # Code
    Task("humaneval_probe", "Code", "probe", "test", _he, fmt_humaneval_probe, "nll", default_limit=40,
         description="NLL per token of HumanEval canonical solutions given the prompt"),
    Task("humaneval", "Code", "code", "test", _he, fmt_humaneval_gen, "pass@1", stop=CODE_STOP, max_new_tokens=384,
         program="humaneval_program"),
    Task("mbpp", "Code", "code", "test", _mbpp, fmt_mbpp_gen, "pass@1", num_fewshot=3, fewshot_split="prompt",
         stop=("[DONE]", "\n\n\n"), max_new_tokens=384, program="mbpp_program"),
    # Math
    Task("gsm8k_probe", "Math", "probe", "test", _gsm, fmt_gsm8k_probe, "nll", default_limit=50,
         description="NLL per token of GSM8K reference solutions given the question"),
    Task("gsm8k", "Math", "gen", "test", _gsm, fmt_gsm8k_gen, "strict", num_fewshot=8, fewshot_split="train",
         stop=("Question:", "</s>", "<|im_end|>", "\n\n"), max_new_tokens=256),
    # Package-only (no hub, no shared data): the small-offline suite
    Task("general_knowledge_probe", "General", "probe", "test",
         {"test": Source(package=bigbench_mc("general_knowledge"))}, fmt_qa_probe, "nll",
         description="NLL per token of BIG-bench general_knowledge gold answers"),
    Task("wikidata_probe", "General", "probe", "test", {"test": Source(package=bigbench_cloze("qa_wikidata"))},
         fmt_cloze_probe, "nll", default_limit=100,
         description="NLL per token of BIG-bench qa_wikidata objects given subject and relation "
                     "('The capital of France is' -> ' Paris')"),
    Task("bb_social_iqa", "Commonsense", "mc", "test", {"test": Source(package=bigbench_mc("social_iqa"))},
         fmt_bigbench_mc, "acc_norm", default_limit=150,
         description="BIG-bench social_iqa (SIQA dev), zero-shot; answers differ in length, so acc_norm"),
    Task("bb_cause_and_effect", "Commonsense", "mc", "test",
         {"test": Source(package=bigbench_mc("cause_and_effect/one_sentence"))}, fmt_bigbench_mc, "acc_norm",
         description="BIG-bench cause_and_effect (one sentence): which sentence makes more sense"),
    Task("social_iqa_probe", "Commonsense", "probe", "test", {"test": Source(package=bigbench_mc("social_iqa"))},
         fmt_qa_probe, "nll", default_limit=80,
         description="NLL per token of the gold answer of BIG-bench social_iqa items given context and question"),
    Task("cause_and_effect_probe", "Commonsense", "probe", "test",
         {"test": Source(package=bigbench_mc("cause_and_effect/one_sentence"))}, fmt_qa_probe, "nll",
         description="NLL per token of the sentence that states cause and effect the right way round"),
    # chance-corrected choice mass (calmix.evals.itemscores.choice_mass_cn): above the floor on a 135M model
    Task("general_knowledge_mc", "General", "mc", "test", {"test": Source(package=bigbench_mc("general_knowledge"))},
         fmt_bigbench_mc, "mass_cn", description="chance-corrected probability mass on the gold answer of BIG-bench "
                                                 "general_knowledge (K = 2-15 choices)"),
    Task("human_organs_mc", "General", "mc", "test", {"test": Source(package=bigbench_mc("human_organs_senses"))},
         fmt_bigbench_mc, "mass_cn", description="chance-corrected probability mass on the gold answer of BIG-bench "
                                                 "human_organs_senses ('Which organ is for seeing?', K = 4)"),
    Task("wikihow_step_mc", "Commonsense", "mc", "test",
         {"test": Source(package=bigbench_mc("goal_step_wikihow/step_inference"))}, fmt_bigbench_mc, "mass_cn",
         default_limit=SMALL_OFFLINE_ITEMS["wikihow_step_mc"],
         description="chance-corrected probability mass on the most reasonable step of a wikiHow goal (BIG-bench "
                     "goal_step_wikihow/step_inference, K = 4)"),
    Task("social_iqa_mc", "Commonsense", "mc", "test", {"test": Source(package=bigbench_mc("social_iqa"))},
         fmt_bigbench_mc, "mass_cn", default_limit=SMALL_OFFLINE_ITEMS["social_iqa_mc"],
         description="chance-corrected probability mass on the gold answer of BIG-bench social_iqa (K = 3)"),
    Task("humaneval_probe_pkg", "Code", "probe", "test", {"test": Source(package=human_eval_problems)},
         fmt_humaneval_probe, "nll", default_limit=SMALL_OFFLINE_ITEMS["humaneval_probe_pkg"], description="humaneval_probe read from the human-eval package"),
    Task("gsm_symbolic_probe", "Math", "probe", "test", {"test": Source(package=gsm_symbolic_eval_rows)},
         fmt_gsm8k_probe, "nll", default_limit=SMALL_OFFLINE_ITEMS["gsm_symbolic_probe"],
         description="NLL per token of reasoning-gym gsm_symbolic reference CoT on GSM_SYMBOLIC_EVAL_TEMPLATES"),
]:
    register(_t)
