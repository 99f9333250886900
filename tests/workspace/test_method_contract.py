"""The method contract (`cxrvlp.core.method`): every installed method's spec is checked and usable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cxrvlp.core.method import (
    MethodContractError,
    MethodSpec,
    PromptChoice,
    check_method_spec,
    resolve_recipe,
)
from cxrvlp.core.registry import get_method, installed_methods, list_models

METHODS = sorted(installed_methods())


def _spec(tmp_path: Path, **kw) -> MethodSpec:
    (tmp_path / "tiny.yaml").write_text("epochs: 1\n")
    base = dict(
        name="m",
        train=lambda c, o=(): Path("."),
        load_adapter=lambda d, device=None: None,
        load_official_checkpoint=lambda s, name=None, strict=True: None,
        configs_dir=tmp_path,
        prompts={"*": PromptChoice("cxrclip-binary", official=False)},
        image_size_keys=("data.image_size",),
        text_length_key=None,
    )
    base.update(kw)
    return MethodSpec(**base)


@pytest.mark.parametrize("method", METHODS)
def test_installed_method_fulfils_contract(method):
    spec = get_method(method)
    assert spec.name == method
    assert "tiny" in spec.recipes() and spec.recipe("tiny").is_file()
    assert list_models(method), f"{method} registers no model name"
    names = set(list_models(method))
    assert {f"{method}-tiny"} <= names
    for rec in spec.pretrained:  # every released checkpoint record instantiates a registered model
        assert rec.name in names, rec
    from cxrvlp.bench.prompts import PROMPT_SETS

    for ds, choice in spec.prompts.items():
        assert choice.prompt_set in PROMPT_SETS, (method, ds, choice)


def test_contract_errors_name_the_part(tmp_path):
    good = _spec(tmp_path)
    assert check_method_spec(good, "m") is good
    with pytest.raises(MethodContractError, match="entry point is 'other'"):
        check_method_spec(good, "other")
    with pytest.raises(MethodContractError, match="no default entry"):
        check_method_spec(dataclasses.replace(good, prompts={}), "m")
    with pytest.raises(MethodContractError, match="train is not callable"):
        check_method_spec(dataclasses.replace(good, train=None), "m")
    with pytest.raises(MethodContractError, match="not a folder"):
        check_method_spec(dataclasses.replace(good, configs_dir=tmp_path / "nope"), "m")
    with pytest.raises(MethodContractError, match="METHOD_SPEC"):
        check_method_spec(object(), "m")


def test_recipe_resolution(tmp_path):
    spec = _spec(tmp_path)
    assert resolve_recipe(spec, "tiny") == tmp_path / "tiny.yaml"
    from cxrvlp.core.errors import ConfigError

    with pytest.raises(ConfigError, match="available: \\['tiny'\\]"):
        resolve_recipe(spec, "paper")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_recipe(spec, tmp_path / "missing.yaml")


def test_lazy_imports_on_first_call_only():
    import sys

    from cxrvlp.core.method import lazy

    fn = lazy("json:dumps")
    assert fn.__name__ == "dumps" and fn({"a": 1}) == '{"a": 1}'
    with pytest.raises(ValueError, match="module:function"):
        lazy("json.dumps")
    missing = lazy("cxrvlp_no_such_module_xyz:f")  # building it imports nothing
    assert "cxrvlp_no_such_module_xyz" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        missing()
