"""Long-range recall, scored by exact match.

A case is {"context": str, "query": str, "answer": str} (other keys, such as "kind", are kept
for grouping). For each case the model starts a fresh episodic memory (semantic slots survive,
as they hold what training consolidated), reads the context segment by segment, then fills
`query + [MASK]` greedily. The case counts when the generated span, decoded and
whitespace-stripped, equals the answer, whitespace-stripped. The answer is never shown to the
model; only its text is compared.

    from mlot.evaluation.recall import load_recall_cases, score_recall
    cases = load_recall_cases("03-tokenization/corpus/recall.jsonl", limit=50)
    result = score_recall(model, tokenizer, cases, max_span_tokens=16)
    result.exact_match, result.by_kind, result.cases[0].prediction

The model needs only `reset_memory(batch_size=1)`, `read_document(ids)` and
`infill(ids, max_span_tokens)` (a stub with those three methods is enough for testing the
scoring); ablations are the caller's business (`model.set_memory(...)` before calling).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tqdm import tqdm

MASK_TOKEN = "[MASK]"
REQUIRED_KEYS = ("context", "query", "answer")


@dataclass
class RecallCase:
    context: str
    query: str
    answer: str
    kind: str = "all"            # grouping label (the generator writes "episodic" / "semantic")


@dataclass
class CaseResult:
    query: str
    answer: str                  # the expected answer, stripped
    prediction: str              # the decoded span, stripped
    correct: bool
    kind: str


@dataclass
class RecallResult:
    exact_match: float           # fraction of cases correct (0.0 for no cases)
    correct: int
    total: int
    by_kind: dict                # kind -> {"exact_match", "correct", "total"}
    cases: list                  # CaseResult per case, in input order

    def to_dict(self, with_cases: bool = False) -> dict:
        return {"exact_match": self.exact_match, "correct": self.correct, "total": self.total, "by_kind": self.by_kind,
                **({"cases": [asdict(case) for case in self.cases]} if with_cases else {})}


def load_recall_cases(path, limit: int | None = None) -> list[RecallCase]:
    """Cases of a JSONL file; raises ValueError naming the file and line for a malformed one."""
    cases = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if limit is not None and len(cases) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number}: not JSON ({error.msg})") from None
            if not isinstance(record, dict) or any(not isinstance(record.get(key), str) for key in REQUIRED_KEYS):
                raise ValueError(f"{path} line {number}: needs string fields {', '.join(REQUIRED_KEYS)}")
            cases.append(RecallCase(*(record[key] for key in REQUIRED_KEYS), str(record.get("kind", "all"))))
    return cases


def score_recall(model, tokenizer, cases, max_span_tokens: int = 16, progress: bool = False,
                 desc: str = "recall") -> RecallResult:
    """Exact-match recall of `cases` (RecallCase or dicts with context/query/answer[/kind])."""
    mask_ids = tokenizer.encode(MASK_TOKEN, allow_special=True)
    results = []
    for case in tqdm(cases, desc=desc, unit="case", disable=not progress, leave=False):
        if isinstance(case, dict):
            case = RecallCase(case["context"], case["query"], case["answer"], str(case.get("kind", "all")))
        model.reset_memory(batch_size=1)
        model.read_document(tokenizer.encode(case.context))
        spans = model.infill(tokenizer.encode(case.query) + mask_ids, max_span_tokens)
        prediction = tokenizer.decode(spans[0] if spans else []).strip()
        answer = case.answer.strip()
        results.append(CaseResult(case.query, answer, prediction, prediction == answer, case.kind))

    def totals(group):
        correct = sum(result.correct for result in group)
        return {"exact_match": correct / len(group) if group else 0.0, "correct": correct, "total": len(group)}

    by_kind = {kind: totals([r for r in results if r.kind == kind]) for kind in sorted({r.kind for r in results})}
    return RecallResult(**totals(results), by_kind=by_kind, cases=results)
