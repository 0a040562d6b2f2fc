"""Context graphs: the offline extractor, the k-hop subgraph sampler and the relation-removal negative."""

from __future__ import annotations

import random

import networkx as nx
import pytest

from trlm.factcheck.graph import (Triple, build_graph, offline_entities, offline_triples, parse_triples, path_entities,
                                  remove_sentence, removable_edges, sample_path)

DOC = ["Marie Curie was born in Warsaw in 1867.",
       "She moved to Paris to study at the Sorbonne.",
       "In Paris she met Pierre Curie.",
       "The Sorbonne later named a building after Marie Curie.",
       "However, the weather was cold."]


def test_offline_entities_drop_sentence_openers_and_keep_names_and_numbers():
    assert offline_entities(DOC[0]) == ["Marie Curie", "Warsaw", "1867"]
    assert offline_entities(DOC[2]) == ["Paris", "Pierre Curie"]
    assert offline_entities(DOC[4]) == []


def test_offline_triples_link_entities_of_one_sentence_with_that_sentence_as_relation():
    triples = offline_triples(DOC)
    assert Triple("Marie Curie", "Warsaw", DOC[0], 0) in triples
    assert all(t.relation == DOC[t.sentence] for t in triples)
    assert not [t for t in triples if t.sentence == 4]


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_sampled_subgraph_is_a_connected_chain_of_k_hops_over_distinct_sentences(hops):
    g = build_graph(offline_triples(DOC))
    for seed in range(20):
        path = sample_path(g, hops, random.Random(seed))
        assert path is not None and len(path) == hops
        ents = path_entities(path)
        assert len(ents) == hops + 1 == len(set(ents))  # a chain over distinct entities
        assert all(path[i][1] == path[i + 1][0] for i in range(hops - 1))  # consecutive edges share an entity
        sub = nx.Graph([(u, v) for u, v, _ in path])
        assert nx.is_connected(sub)
        sents = [g.edges[e]["sentence"] for e in path]
        assert len(set(sents)) == hops  # each hop is stated by a different sentence


def test_sampler_returns_none_when_no_chain_of_that_length_exists():
    g = build_graph([Triple("A", "B", "r", 0)])
    assert sample_path(g, 2, random.Random(0)) is None
    with pytest.raises(ValueError):
        sample_path(g, 0, random.Random(0))


def test_removal_negative_deletes_exactly_the_sentence_of_the_removed_relation():
    g = build_graph(offline_triples(DOC))
    path = [("Paris", "Sorbonne", 0), ("Sorbonne", "Marie Curie", 0)]
    assert all(g.has_edge(*e) for e in path)
    edges = removable_edges(g, path)
    assert ("Sorbonne", "Marie Curie", 0) in edges
    s = g.edges["Sorbonne", "Marie Curie", 0]["sentence"]
    neg = remove_sentence(DOC, s)
    assert DOC[3] not in neg and all(DOC[i] in neg for i in range(5) if i != 3)
    # with the relation's only sentence gone, no sentence left links the pair
    left = build_graph(offline_triples([x for i, x in enumerate(DOC) if i != 3]))
    assert not left.has_edge("Sorbonne", "Marie Curie")


def test_an_entity_pair_stated_twice_is_not_removable():
    g = build_graph([Triple("A", "B", "s0", 0), Triple("A", "B", "s1", 1), Triple("B", "C", "s2", 2)])
    assert removable_edges(g, [("A", "B", 0), ("B", "C", 0)]) == [("B", "C", 0)]


def test_parse_triples_reads_messy_llm_lines():
    text = ("Here are the relations:\nS1: Marie Curie | born in | Warsaw\n- 2) Pierre Curie | met | Marie Curie\n"
            "* S3. \"Paris\" | home of | Sorbonne\nnot a triple\nS9: A | x | B\nS1: same | r | same")
    got = parse_triples(text, n_sentences=3)
    assert got[:3] == [Triple("Marie Curie", "Warsaw", "born in", 0), Triple("Pierre Curie", "Marie Curie", "met", 1),
                       Triple("Paris", "Sorbonne", "home of", 2)]
    assert got[3] == Triple("A", "B", "x", -1) and len(got) == 4  # out-of-range sentence kept unanchored
