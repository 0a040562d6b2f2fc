"""Context graphs for CG2C: entities as nodes, one edge per (entity, entity, relation) triple of a sentence.

* :func:`offline_triples` needs no LLM: entities are capitalised spans, numbers and years found by
  :func:`offline_entities`; every sentence that names two entities links them, with the sentence as the relation.
* :func:`parse_triples` reads an LLM's ``S<k>: head | relation | tail`` lines (the LLM pipeline, :mod:`.synth`).
* :func:`sample_path` draws a connected multi-hop subgraph: a simple chain of ``hops`` edges (A-B-C-... with
  distinct entities) whose edges come from distinct sentences, as FactCG's CG2C does.
* :func:`removable_edges` lists the chain's edges whose entity pair no other sentence links, so that deleting
  that edge's sentence (:func:`remove_sentence`) removes the relation from the document for certain.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

import networkx as nx


@dataclass(frozen=True)
class Triple:
    head: str
    tail: str
    relation: str
    sentence: int  # index of the sentence that states it


Edge = tuple[str, str, int]  # (u, v, key) of a MultiGraph edge

# Words that start a sentence or a clause capitalised without naming anything.
_STOP = set("""a an the this that these those it its he she they we i you his her their our my your there here
when while after before as at in on of for from by with but and or if so then also however meanwhile yet not no
one two some many most more all any each every such what which who whom whose where why how mr mrs ms dr
monday tuesday wednesday thursday friday saturday sunday during today yesterday tomorrow let last next according
despite although because since until now once instead still even just only both either neither several other
another would could should will can may might must said says""".split())
_CAP = re.compile(r"\b(?:[A-Z][\w'’&.-]*|[0-9][0-9,.]*%?)(?:\s+(?:of|de|for|van|von|la|le)?\s*"
                  r"(?:[A-Z][\w'’&.-]*|[0-9][0-9,.]*))*")


def offline_entities(sentence: str) -> list[str]:
    """Capitalised spans, numbers and years of a sentence, in order of first mention (no LLM, no model)."""
    out: list[str] = []
    for m in _CAP.finditer(sentence):
        words = m.group(0).strip(" .,'’-").split()
        while words and words[0].lower() in _STOP:  # "The BBC" -> "BBC"; a lone "However" -> nothing
            words = words[1:]
        while words and words[-1].lower() in ("of", "the", "and", "for", "de"):
            words = words[:-1]
        ent = " ".join(words)
        if ent and (len(ent) > 1 or ent.isdigit()) and "'" not in ent and "’" not in ent and ent not in out:
            out.append(ent)
    return out


def keywords(sentences: Sequence[str], min_len: int = 5) -> list[str]:
    """Lower-case content words (>= ``min_len`` letters, not function words) found in two or more sentences:
    the concepts ("government", "amnesty") that link sentences naming no shared name."""
    seen: dict[str, set[int]] = {}
    for k, s in enumerate(sentences):
        for w in re.findall(r"\b[a-z]+\b", s):
            if len(w) >= min_len and w not in _STOP and w not in _FUNCTION:
                seen.setdefault(w, set()).add(k)
    return [w for w, ks in seen.items() if len(ks) >= 2]


_FUNCTION = set("""about above across after again against along among around because before behind below beneath
beside between beyond could every first going having might other their there these those through under until
where which while whose would being since people thing things really""".split())


def _canonical(ents: list[str], known: list[str]) -> list[str]:
    """A one-word name that is a word of a longer known name becomes that name ("Sanchez" -> "Pedro Sanchez")."""
    out = []
    for e in ents:
        if " " not in e:
            longer = [k for k in known if " " in k and e in k.split()]
            e = longer[0] if longer else e
        if e not in out:
            out.append(e)
    return out


def offline_triples(sentences: Sequence[str], max_per_sentence: int = 6) -> list[Triple]:
    """One triple per pair of entities named in the same sentence (the sentence is the relation). Entities are
    the sentence's names (:func:`offline_entities`, one-word names merged into the longer name they abbreviate)
    and the document's :func:`keywords` it contains."""
    names = [offline_entities(s) for s in sentences]
    known = [e for ents in names for e in ents]
    kws = keywords(sentences)
    triples = []
    for k, s in enumerate(sentences):
        found = [w for w in kws if re.search(rf"\b{w}\b", s)]
        ents = (_canonical(names[k], known) + found)[:max_per_sentence]
        for i in range(len(ents)):
            for j in range(i + 1, len(ents)):
                triples.append(Triple(ents[i], ents[j], s, k))
    return triples


_TRIPLE_LINE = re.compile(r"^\s*(?:[-*•]\s*)?(?:\(?S?(\d+)\)?\s*[:.)-]\s*)?(.+?)\s*\|\s*(.+?)\s*\|\s*(.+?)\s*$", re.I)


def parse_triples(text: str, n_sentences: int) -> list[Triple]:
    """``S<k>: head | relation | tail`` lines of an LLM's answer (1-based k; bullets, brackets and stray lines
    tolerated). A line whose sentence number is out of range or missing is kept against no sentence (-1)."""
    out = []
    for line in text.splitlines():
        m = _TRIPLE_LINE.match(line)
        if not m:
            continue
        k = int(m.group(1)) - 1 if m.group(1) else -1
        head, rel, tail = (x.strip(" \"'`*") for x in m.group(2, 3, 4))
        if head and tail and rel and head.lower() != tail.lower():
            out.append(Triple(head, tail, rel, k if 0 <= k < n_sentences else -1))
    return out


def build_graph(triples: Sequence[Triple]) -> nx.MultiGraph:
    """Entities as nodes, one edge per triple (attributes ``relation`` and ``sentence``)."""
    g = nx.MultiGraph()
    for t in triples:
        g.add_edge(t.head, t.tail, relation=t.relation, sentence=t.sentence)
    return g


def sample_path(g: nx.MultiGraph, hops: int, rng: random.Random, tries: int = 50) -> list[Edge] | None:
    """A chain of ``hops`` edges over distinct entities and distinct sentences (a connected k-hop subgraph);
    ``None`` when ``tries`` random walks find none."""
    if hops < 1:
        raise ValueError(f"hops must be >= 1, got {hops}")
    nodes = [n for n in g.nodes if g.degree(n) > 0]
    for _ in range(tries if nodes else 0):
        cur = rng.choice(nodes)
        seen, sents, path = {cur}, set(), []
        while len(path) < hops:
            options = [(cur, v, k) for v, keys in g[cur].items() if v not in seen
                       for k, d in keys.items() if d["sentence"] not in sents]
            if not options:
                break
            u, v, k = rng.choice(options)
            path.append((u, v, k))
            seen.add(v)
            sents.add(g.edges[u, v, k]["sentence"])
            cur = v
        if len(path) == hops:
            return path
    return None


def path_entities(path: Sequence[Edge]) -> list[str]:
    """The chain's entities in order (A, B, C, ...)."""
    return [path[0][0], *[v for _, v, _ in path]] if path else []


def removable_edges(g: nx.MultiGraph, path: Sequence[Edge]) -> list[Edge]:
    """Edges of ``path`` whose two entities are linked by no other sentence of the document."""
    out = []
    for u, v, k in path:
        s = g.edges[u, v, k]["sentence"]
        if s >= 0 and all(d["sentence"] == s for d in g.get_edge_data(u, v).values()):
            out.append((u, v, k))
    return out


def remove_sentence(sentences: Sequence[str], index: int) -> str:
    """The document without sentence ``index`` (sentences joined by one space)."""
    if not 0 <= index < len(sentences):
        raise IndexError(f"sentence {index} of {len(sentences)}")
    return " ".join(s for i, s in enumerate(sentences) if i != index)
