"""CG2C: multi-hop claims from a document's context graph, with labels from construction (FactCG, §2.1).

For each document: extract a context graph, sample a connected k-hop chain of it, write a claim that joins the
chain's entities, and pair the claim with the document (supported, 1) and with the document stripped of one
relation of the chain (not supported, 0). The claim is the same in both rows; only the evidence changes.

Two pipelines, both through one chat client (:mod:`trlm.core.llm`: the local engine or any OpenAI-compatible
endpoint, behind a result cache so a killed run resumes):

* ``llm`` (the paper's): the LLM lists ``head | relation | tail`` triples per sentence, writes the claim from the
  chain's entities given the article, and rewrites the article to drop one relation with minimal changes. A
  rewrite that comes back empty, unchanged or mostly rewritten is replaced by deleting the sentence that states
  the relation (counted in ``stats`` and marked in the row's meta, never silent).
* ``offline`` (no capable LLM needed): entities from :func:`~trlm.factcheck.graph.offline_entities`, edges from
  sentences that name two entities, the negative made by **deleting the sentence that carries the removed edge**,
  and the claim written by the local model from the chain's sentences (or, with ``claim_writer="extract"``,
  the chain's sentences themselves). A claim is kept only if it names both entities of the removed edge and
  no capitalised entity or number absent from the chain's sentences, and if 80 % of its content words occur in the
  document, so both labels stay right by construction however clumsy the claim.

Rows are FactCG's JSONL schema (:func:`~trlm.factcheck.data.cg2c_row`); provenance (document id, chain, removed
edge, how the negative was made) goes to ``OUT.meta.jsonl``, line-aligned.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from trlm.core.llm import ChatClient, ChatParams
from trlm.factcheck.chunking import split_sentences
from trlm.factcheck.data import cg2c_row
from trlm.factcheck.graph import (build_graph, offline_entities, offline_triples, parse_triples, path_entities,
                                  remove_sentence, removable_edges, sample_path)

SYSTEM = "You are a helpful assistant."
EXTRACT_PROMPT = ("Read the article sentence by sentence. For every sentence, list the relations it states "
                  "between two entities, one per line, as\nS<sentence number>: entity | short relation | entity\n\n"
                  "Article:\n{numbered}\n\nRelations:")
CLAIM_PROMPT = ("Article:\n{doc}\n\nWrite a short sentence which must include the following entities: {entities}. "
                "It must follow from the article.\nSentence:")
REMOVE_PROMPT = ("Article:\n{doc}\n\nRewrite the article with minimal changes so that it no longer states this "
                 "relation: {head} | {relation} | {tail}. Keep everything else word for word. Return only the "
                 "rewritten article.")
OFFLINE_CLAIM_PROMPT = ("Facts:\n{facts}\n\nWrite one short sentence that combines these facts and mentions "
                        "{entities}. Answer with the sentence only.")


@dataclass(frozen=True)
class SynthArgs:
    mode: str = "offline"  # offline | llm
    hops: tuple[int, ...] = (2, 3)  # chain lengths, drawn uniformly per document
    claim_writer: str = "llm"  # offline mode: llm (the client writes the claim) | extract (the chain's sentences)
    seed: int = 0
    max_tokens: int = 64  # per claim
    min_sentences: int = 3

    def __post_init__(self):
        if self.mode not in ("offline", "llm"):
            raise ValueError(f"mode must be offline or llm, got {self.mode!r}")
        if self.claim_writer not in ("llm", "extract"):
            raise ValueError(f"claim_writer must be llm or extract, got {self.claim_writer!r}")
        if not self.hops or min(self.hops) < 1:
            raise ValueError(f"hops must be positive, got {self.hops}")


@dataclass
class SynthResult:
    rows: list[dict] = field(default_factory=list)  # CG2C rows, positive then negative per kept document
    meta: list[dict] = field(default_factory=list)  # one per row
    stats: Counter = field(default_factory=Counter)  # documents kept / dropped, by reason


@dataclass
class _Plan:
    doc_id: int
    sentences: list[str]
    graph: object
    path: list
    claim: str = ""


def clean_claim(text: str) -> str:
    """The first sentence of a model's answer, without quotes, labels or list marks."""
    text = re.sub(r"^\s*(?:sentence|claim|answer)\s*:\s*", "", text.strip(), flags=re.I)
    text = text.strip().splitlines()[0] if text.strip() else ""
    first = split_sentences(text)[:1]
    return (first[0] if first else text).strip(" \"'*-")


MIN_OVERLAP = 0.8  # offline claims: share of their content words that the document contains


def content_overlap(claim: str, doc: str) -> float:
    """Share of the claim's content words (4+ letters) that occur in ``doc`` (case-insensitive)."""
    words = [w for w in re.findall(r"[a-z]{4,}", claim.lower())]
    have = set(re.findall(r"[a-z]{4,}", doc.lower()))
    return sum(w in have for w in words) / len(words) if words else 0.0


def _mentions(text: str, entity: str) -> bool:
    return entity.lower() in text.lower()


def _plan(doc_id: int, doc: str, args: SynthArgs, rng: random.Random, stats: Counter,
          triples_text: str | None = None) -> _Plan | None:
    sentences = split_sentences(doc)
    if len(sentences) < args.min_sentences:
        stats["too_few_sentences"] += 1
        return None
    triples = parse_triples(triples_text, len(sentences)) if triples_text is not None else offline_triples(sentences)
    g = build_graph(triples)
    path = sample_path(g, rng.choice(args.hops), rng)
    if path is None:
        stats["no_chain"] += 1
        return None
    return _Plan(doc_id, sentences, g, path)


def _claim_prompt(p: _Plan, args: SynthArgs) -> str:
    ents = ", ".join(path_entities(p.path))
    if args.mode == "llm":
        return CLAIM_PROMPT.format(doc=" ".join(p.sentences), entities=ents)
    facts = "\n".join(f"- {p.sentences[i]}" for i in _chain_sentences(p))
    return OFFLINE_CLAIM_PROMPT.format(facts=facts, entities=ents)


def _chain_sentences(p: _Plan) -> list[int]:
    return sorted({p.graph.edges[e]["sentence"] for e in p.path if p.graph.edges[e]["sentence"] >= 0})


def _accept(p: _Plan, rng: random.Random, stats: Counter, check_entities: bool):
    """The edge to remove, or None (with the reason counted) when the claim cannot carry both labels."""
    if not p.claim or len(p.claim.split()) < 4:
        stats["claim_empty"] += 1
        return None
    if check_entities:
        source = " ".join(p.sentences[i] for i in _chain_sentences(p))
        if any(not _mentions(source, e) for e in offline_entities(p.claim)):
            stats["claim_unsupported_entity"] += 1
            return None
        if content_overlap(p.claim, " ".join(p.sentences)) < MIN_OVERLAP:
            stats["claim_words_not_in_document"] += 1
            return None
    edges = [e for e in removable_edges(p.graph, p.path) if _mentions(p.claim, e[0]) and _mentions(p.claim, e[1])]
    if not edges:
        stats["claim_misses_removable_edge"] += 1
        return None
    return rng.choice(edges)


def synthesize(docs: Sequence[str], client: ChatClient | None, args: SynthArgs = SynthArgs(),
               progress: bool = False) -> SynthResult:
    """CG2C pairs for ``docs`` (see the module docstring); ``client`` may be None only for offline + extract."""
    needs_client = args.mode == "llm" or args.claim_writer == "llm"
    if needs_client and client is None:
        raise ValueError(f"mode {args.mode} with claim writer {args.claim_writer} needs a chat client")
    rng, res = random.Random(args.seed), SynthResult()
    params = ChatParams(max_tokens=args.max_tokens, temperature=0.0, seed=args.seed)
    triples_text: list[str | None] = [None] * len(docs)
    if args.mode == "llm":
        convs = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": EXTRACT_PROMPT.format(
            numbered="\n".join(f"S{k + 1}: {s}" for k, s in enumerate(split_sentences(d))))}] for d in docs]
        triples_text = list(client.complete_many(convs, ChatParams(max_tokens=512, seed=args.seed), progress=progress))
    plans = [p for i, d in enumerate(docs) if (p := _plan(i, d, args, rng, res.stats, triples_text[i])) is not None]
    if args.claim_writer == "extract" and args.mode == "offline":
        for p in plans:
            p.claim = " ".join(p.sentences[i] for i in _chain_sentences(p))
    else:
        convs = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": _claim_prompt(p, args)}]
                 for p in plans]
        for p, text in zip(plans, client.complete_many(convs, params, progress=progress)):
            p.claim = clean_claim(text)
    accepted = [(p, e) for p in plans if (e := _accept(p, rng, res.stats, args.mode == "offline")) is not None]
    negatives = _negatives(accepted, client, args, res.stats, progress)
    for (p, (u, v, k)), (neg, how) in zip(accepted, negatives):
        pos = " ".join(p.sentences)
        chain = [[a, b, p.graph.edges[a, b, kk]["relation"]] for a, b, kk in p.path]
        info = {"doc_id": p.doc_id, "hops": len(p.path), "entities": path_entities(p.path), "chain": chain,
                "removed": [u, v, p.graph.edges[u, v, k]["relation"]], "negative": how, "mode": args.mode}
        res.rows += [cg2c_row(pos, p.claim, 1), cg2c_row(neg, p.claim, 0)]
        res.meta += [{**info, "label": 1}, {**info, "label": 0}]
        res.stats["kept"] += 1
    return res


def _negatives(accepted, client, args: SynthArgs, stats: Counter, progress: bool) -> list[tuple[str, str]]:
    """(negative document, how it was made) per accepted plan."""
    deleted = [remove_sentence(p.sentences, p.graph.edges[e]["sentence"]) for p, e in accepted]
    if args.mode == "offline":
        return [(d, "deleted-sentence") for d in deleted]
    convs = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": REMOVE_PROMPT.format(
        doc=" ".join(p.sentences), head=e[0], tail=e[1], relation=p.graph.edges[e]["relation"])}]
        for p, e in accepted]
    budget = ChatParams(max_tokens=1024, seed=args.seed)
    out = []
    for (p, e), text, fallback in zip(accepted, client.complete_many(convs, budget, progress=progress), deleted):
        if _minimal_rewrite(p.sentences, text):
            out.append((text.strip(), "rewritten"))
        else:
            stats["rewrite_replaced_by_deletion"] += 1
            out.append((fallback, "deleted-sentence"))
    return out


def _minimal_rewrite(sentences: Sequence[str], text: str) -> bool:
    """A rewrite is usable if it changed something and kept at least half of the original sentences verbatim."""
    text = text.strip()
    if not text or text == " ".join(sentences):
        return False
    return sum(s in text for s in sentences) >= len(sentences) / 2
