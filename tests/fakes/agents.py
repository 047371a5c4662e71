"""Scripted role behaviour for the fake OpenAI server, chosen by the request's output schema.

DSPy's JSONAdapter sends each signature's output schema; the reply function looks at
its property names to know which role step it is answering, and reads the inputs from
the `[[ ## field ## ]]` sections of the last user message, like a model would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field


def inputs_of(request: dict) -> dict[str, str]:
    text = request["messages"][-1]["content"]
    return {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", text, re.DOTALL)
    }


@dataclass
class ScriptedAgents:
    """Knobs for what each role does; defaults make a keep-strategy item pass."""

    weak_answer: str = "I do not know"  # wrong for every seed: the weak solver fails
    strong_query: str = "question"  # "question": search the question words; or a fixed query
    strong_queries: tuple[str, ...] = ()  # when set, the queries searched one after another (then it answers)
    challenger_question: str = "Which playwright wrote the tragedy set in Denmark?"
    challenger_answer: str | None = None  # None: copy the seed answer
    challenger_passages: tuple[int, ...] = (1,)  # the passage numbers it cites
    verdict: str = "accept"
    # When set, the challenger writes a good question only if its instructions contain this rule;
    # otherwise it puts the answer in the question (a leak), like a model that needs telling.
    challenger_rule: str | None = None
    # Likewise for the judge: with this rule in its instructions it rejects answers the evidence does not
    # state; without it, it accepts everything.
    judge_rule: str | None = None
    rewrite_adds: str = " Never put the answer in the question."  # what the optimizer role appends
    strong_think: str = "I should search for the key words of the question."  # a search's thought (both calls)
    explain_thoughts: tuple[str, ...] = ()  # when set, the explain calls' thoughts in turn (then strong_think)
    first_queries: tuple[str, ...] = ()  # when set, the first search's queries in turn (then strong_query's)
    hinted_think: str | None = None  # when set, what the hinted first call thinks (the explain call says strong_think)
    calls: dict[str, int] = field(default_factory=dict)
    tagged: list[str] = field(default_factory=list)  # the questions the tagger was asked about
    judged: list[str] = field(default_factory=list)  # the evidence the LLM judge was shown

    def __call__(self, request: dict) -> str:
        response_format = request.get("response_format") or {}
        # llama.cpp dialect {"type": "json_object", "schema": S};
        # OpenAI's {"type": "json_schema", "json_schema": {"schema": S}}
        schema = response_format.get("schema") or (response_format.get("json_schema") or {}).get("schema") or {}
        keys = tuple((schema.get("properties") or {}).keys())
        inputs = inputs_of(request)
        step = {
            ("needs_search", "evidence_scope", "recommended_sources"): "tagger",
            ("question", "answer", "supporting_passages"): "challenger",
            ("answer",): "weak",
            ("think", "query"): "strong_first",
            ("think", "action", "argument"): "strong_next",
            ("think",): "strong_explain" if "query" in inputs else "strong_cite",
            ("think", "answer"): "strong_final",
            ("verdict", "reason"): "judge",
            ("new_instructions", "change_summary"): "rewrite",
        }.get(keys, "unknown")
        self.calls[step] = self.calls.get(step, 0) + 1
        if step == "judge":
            self.judged.append(inputs["evidence"])
        if step == "tagger":
            self.tagged.append(inputs["question"].split("\n\n")[0])
            reply = {
                "needs_search": True,
                "evidence_scope": "open_retrieval",
                "recommended_sources": ["encyclopedia"],
            }
        elif step == "challenger" and self.challenger_rule is not None:
            follows = self.challenger_rule in request["messages"][0]["content"]
            seed = inputs["seed_question"].rstrip("?")
            question = (
                f"{seed[:1].upper()}{seed[1:]}?" if follows else f"Is {inputs['seed_answer']} the answer to {seed}?"
            )
            reply = {"question": question, "answer": inputs["seed_answer"], "supporting_passages": [1]}
        elif step == "challenger":
            reply = {
                "question": self.challenger_question,
                "answer": self.challenger_answer or inputs["seed_answer"],
                "supporting_passages": list(self.challenger_passages),
            }
        elif step == "weak":
            reply = {"answer": self.weak_answer}
        elif step == "strong_first" and self.strong_queries:
            reply = {"think": self.hinted_think or self.strong_think, "query": self.strong_queries[0]}
        elif step == "strong_next" and len(re.findall(r"^Search \d+:", inputs["history"], re.MULTILINE)) < len(
            self.strong_queries
        ):
            searched = len(re.findall(r"^Search \d+:", inputs["history"], re.MULTILINE))
            reply = {
                "think": "The castle passage names the play.",
                "action": "search",
                "argument": self.strong_queries[searched],
            }
        elif step == "strong_first" and self.calls[step] <= len(self.first_queries):
            reply = {"think": self.hinted_think or self.strong_think, "query": self.first_queries[self.calls[step] - 1]}
        elif step == "strong_first":
            query = inputs["question"].rstrip("?") if self.strong_query == "question" else self.strong_query
            reply = {"think": self.hinted_think or self.strong_think, "query": query}
        elif step == "strong_next":
            answer = re.search(r"The answer is '([^']*)'", inputs.get("hint", ""))
            reply = {
                "think": "The passages do not say it yet.",
                "action": "answer",
                "argument": answer.group(1) if answer else "unknown",
            }
        elif step == "strong_explain" and self.calls[step] <= len(self.explain_thoughts):
            reply = {"think": self.explain_thoughts[self.calls[step] - 1]}
        elif step == "strong_explain":  # the thought kept for a search, written without the hint
            later = bool(inputs.get("history"))
            reply = {
                "think": f"What was found leads to a search for {inputs['query'].splitlines()[0]}."
                if later
                else self.strong_think
            }
        elif step == "strong_cite" and inputs.get("answer") == "insufficient evidence":
            reply = {"think": "None of the passages found states it: the evidence is insufficient."}
        elif step == "strong_cite":
            reply = {"think": f"The first passage states that it is {inputs['answer']}."}
        elif step == "strong_final":
            reply = {"think": "I could not find it.", "answer": "unknown"}
        elif step == "judge" and self.judge_rule is not None:
            follows = self.judge_rule in request["messages"][0]["content"]
            stated = inputs["answer"].lower() in inputs["evidence"].lower()
            reply = {"verdict": "accept" if stated or not follows else "reject", "reason": "Checked the evidence."}
        elif step == "judge":
            reply = {"verdict": self.verdict, "reason": "The answer is stated in the first passage."}
        elif step == "rewrite":
            reply = {
                "new_instructions": inputs["current_instructions"].replace("\n", " ") + self.rewrite_adds,
                "change_summary": "warn against leaking the answer",
            }
        else:
            raise AssertionError(f"unexpected request with output keys {keys}")
        return json.dumps(reply)
