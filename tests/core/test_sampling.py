"""Counter-based noise and the sampler: pure tensor functions with hand-set logits."""

from __future__ import annotations

import torch

from trlm.core.sampling import counter_uniform, filter_logits, sample_next


def test_counter_noise_is_a_function_of_its_key():
    seq, pos = torch.tensor([0, 1, 2]), torch.tensor([5, 5, 5])
    a = counter_uniform(42, seq, pos, 100)
    b = counter_uniform(42, seq, pos, 100)
    assert torch.equal(a, b)
    # row for (seq=1, pos=5) does not depend on which other rows are in the batch
    alone = counter_uniform(42, torch.tensor([1]), torch.tensor([5]), 100)
    assert torch.equal(alone[0], a[1])
    assert not torch.equal(counter_uniform(43, seq, pos, 100), a)
    assert not torch.equal(a[0], a[1])


def test_counter_noise_looks_uniform():
    u = counter_uniform(0, torch.arange(64), torch.zeros(64, dtype=torch.long), 4096).flatten()
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / u.numel()
    assert float((hist - 0.1).abs().max()) < 0.01


def test_gumbel_max_samples_follow_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    seq = torch.arange(20000)
    toks = sample_next(logits, seed=3, seq=seq, pos=torch.zeros_like(seq), temperature=1.0)
    freq = torch.bincount(toks, minlength=4).float() / 20000
    assert torch.allclose(freq, logits[0].softmax(-1), atol=0.015)


def test_temperature_zero_is_greedy_and_filters_apply():
    logits = torch.tensor([[0.1, 3.0, 2.9, -5.0]])
    one = torch.tensor([0])
    assert int(sample_next(logits, seed=0, seq=one, pos=one, temperature=0)) == 1
    f = filter_logits(logits, top_k=2)
    assert torch.isinf(f[0, [0, 3]]).all() and torch.isfinite(f[0, [1, 2]]).all()
    # top-p: probs ~ [0.03, 0.50, 0.46, 0.0]; a nucleus of 0.5 keeps only the top token
    f = filter_logits(logits, top_p=0.5)
    assert torch.isfinite(f[0, 1]) and torch.isinf(f[0, [0, 2, 3]]).all()
    for s in range(50):
        assert int(sample_next(logits, seed=s, seq=one, pos=one, top_k=2)) in (1, 2)


def _fmix64_int(x: int) -> int:
    """MurmurHash3's fmix64 on Python ints (unsigned 64-bit): the textbook version the tensor code must equal."""
    m = (1 << 64) - 1
    x &= m
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & m
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & m
    return x ^ (x >> 33)


def test_noise_is_the_textbook_hash_bit_for_bit():
    """hash_uniform (in-place int64 arithmetic) equals fmix64 on Python ints for every key, stream 0 and 2, and
    gumbel_noise equals -log(-log u) computed out of place: the sampler's noise did not change by a bit."""
    from trlm.core.sampling import counter_uniform, gumbel_noise, hash_uniform

    m = (1 << 64) - 1
    seeds, seq, pos = torch.tensor([0, 7, -3]), torch.tensor([0, 1, 5]), torch.tensor([0, 63, 100000])
    index = torch.tensor([0, 1, 2, 49151, 123456789])
    for stream in (0, 2):
        got = hash_uniform(seeds, seq, pos, index, stream=stream)
        for b in range(3):
            base = _fmix64_int(int(seeds[b]) * 0x9E3779B97F4A7C15 + 1)
            if stream:
                base += _fmix64_int(stream * 0xA24BAED4963EE407 + 4) * 7
            for k, v in enumerate(index.tolist()):
                key = (base + _fmix64_int(int(seq[b]) * 0xBF58476D1CE4E5B9 + 2) * 3
                       + _fmix64_int(int(pos[b]) * 0x94D049BB133111EB + 3) * 5 + v * 0xD6E8FEB86659FD93) & m
                bits = _fmix64_int(_fmix64_int(key)) >> 11
                assert float(got[b, k]) == (float(bits) + 0.5) / float(1 << 53), (stream, b, k)
    u = counter_uniform(seeds, seq, pos, 49152)
    assert torch.equal(gumbel_noise(seeds, seq, pos, 49152), (-torch.log(-torch.log(u))).to(torch.float32))


def test_greedy_gives_bf16_argmax_including_the_first_of_tied_maxima():
    from trlm.core.sampling import greedy

    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    logits[1, 10] = logits[1, 900] = 50.0  # a tie: the first index wins, as argmax gives
    assert torch.equal(greedy(logits), logits.argmax(-1)) and int(greedy(logits)[1]) == 10
