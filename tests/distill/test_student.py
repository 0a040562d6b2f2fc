"""The student built from the teacher's own blocks: layer choice, exact weight copies, frozen shared embeddings,
and a small export that loads back with the teacher's tensors reattached."""

import pytest
import torch

from trlm.core.models import load_model
from trlm.distill.student import SHARED, StudentArgs, build_student, default_layers, parse_layers


def test_default_layers_spread_evenly_keeping_first_and_last():
    assert default_layers(30, 6) == (0, 6, 12, 17, 23, 29)
    assert default_layers(30, 1) == (0,) and default_layers(4, 4) == (0, 1, 2, 3)
    assert parse_layers("6", 30) == (0, 6, 12, 17, 23, 29) and parse_layers("0,1,29", 30) == (0, 1, 29)
    for bad in ("0,30", "1,1", "a,b"):
        with pytest.raises(ValueError, match="--student-layers"):
            parse_layers(bad, 30)
    with pytest.raises(ValueError, match="between 1 and 30"):
        default_layers(30, 31)


def test_student_with_every_block_reproduces_the_teacher_and_a_subset_copies_its_blocks(tiny_forward_dir):
    teacher = load_model(str(tiny_forward_dir), device="cpu", dtype=torch.float32)
    ids = torch.tensor([[1, 50, 60, 70, 80]])
    full = build_student(teacher, (0, 1)).eval()
    with torch.no_grad():
        torch.testing.assert_close(full(ids).logits, teacher.model(ids).logits)
    one = build_student(teacher, (1,))
    t_sd, s_sd = teacher.model.state_dict(), one.state_dict()
    assert one.config.num_hidden_layers == 1
    assert torch.equal(s_sd["model.layers.0.mlp.up_proj.weight"], t_sd["model.layers.1.mlp.up_proj.weight"])
    assert torch.equal(s_sd["model.embed_tokens.weight"], t_sd["model.embed_tokens.weight"])
    assert not one.get_input_embeddings().weight.requires_grad  # frozen by default
    assert one.model.layers[0].mlp.up_proj.weight.requires_grad
    s_sd["model.layers.0.mlp.up_proj.weight"].add_(1.0)  # copies, not views of the teacher
    assert not torch.equal(s_sd["model.layers.0.mlp.up_proj.weight"], t_sd["model.layers.1.mlp.up_proj.weight"])


def test_export_stores_only_the_blocks_and_loads_back_identically(tiny_forward_dir, tmp_path):
    from safetensors.torch import load_file

    args = StudentArgs(str(tiny_forward_dir), (1,), save_dtype="bfloat16")
    lm = args.build("forward", 64, 0, torch.device("cpu"), False)
    with torch.no_grad():
        lm.model.model.layers[0].mlp.up_proj.weight.add_(0.5)  # "trained"
    path = args.export(lm, "forward", tmp_path / "student", final=True)
    stored = load_file(path / "model.safetensors")
    assert not set(SHARED) & set(stored)
    assert all(v.dtype == torch.bfloat16 for v in stored.values())
    back = load_model(str(path), device="cpu", dtype=torch.float32)
    assert back.token_order == "forward" and back.meta["shared_from"] == str(tiny_forward_dir.resolve())
    got, trained = back.model.state_dict(), lm.model.state_dict()
    teacher = load_model(str(tiny_forward_dir), device="cpu", dtype=torch.float32).model.state_dict()
    assert torch.equal(got["model.embed_tokens.weight"], teacher["model.embed_tokens.weight"])  # reattached, fp32
    for k in stored:  # the blocks: the trained weights, rounded to bf16
        assert torch.equal(got[k], trained[k].to(torch.bfloat16).float()), k
    # a checkpoint (final=False) stays float32 for an exact resume
    ck = args.export(lm, "forward", tmp_path / "ckpt")
    assert all(v.dtype == torch.float32 for v in load_file(ck / "model.safetensors").values())


def test_a_student_reads_its_teachers_token_order(tiny_reverse_dir):
    args = StudentArgs(str(tiny_reverse_dir), (0,))
    assert args.build("reverse", 64, 0, torch.device("cpu"), False).token_order == "reverse"
    with pytest.raises(ValueError, match="token order"):
        args.build("forward", 64, 0, torch.device("cpu"), False)
