"""XSTest readers (trlm.data.xstest) on the shared data: the id halves and the completions files."""

import pytest

from trlm.core.io import InputError, default_data_dir
from trlm.data.xstest import xstest, xstest_completions

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not (DATA / "xstest" / "xstest_prompts.csv").exists(),
                                reason=f"shared XSTest data not found under {DATA}")


@needs_data
def test_even_and_odd_halves_split_the_prompts_by_id_and_filter_by_label():
    even, odd = xstest(DATA, "even"), xstest(DATA, "odd")
    assert even and odd and all(int(r["id"]) % 2 == 0 for r in even) and all(int(r["id"]) % 2 == 1 for r in odd)
    assert not {r["id"] for r in even} & {r["id"] for r in odd}
    safe = xstest(DATA, "odd", "safe")
    assert safe and all(r["label"] == "safe" for r in safe) and len(safe) < len(odd)


@needs_data
def test_completions_are_keyed_by_the_prompt_id():
    comp = xstest_completions(DATA, "gpt4")
    ids = {int(r["id"]) for r in xstest(DATA, "odd")}
    assert len(ids & set(comp)) > 0.9 * len(ids) and all(isinstance(v, str) for v in comp.values())


def test_a_missing_field_names_the_file_and_line(tmp_path):
    (tmp_path / "xstest").mkdir()
    (tmp_path / "xstest" / "xstest_prompts.csv").write_text("id,prompt,label\n1,hello,safe\n2,,unsafe\n")
    with pytest.raises(InputError, match=r"xstest_prompts.csv:3: missing field 'prompt'"):
        xstest(tmp_path, "even")
