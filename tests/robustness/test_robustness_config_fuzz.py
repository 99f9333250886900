"""Hypothesis: malformed YAML and overrides always raise ConfigError naming the key or the file."""

from __future__ import annotations

import string

import yaml
from cxrvlp.core.errors import ConfigError
from cxrvlp.core.training import TrainConfig, load_config
from cxrvlp.core.training.config import config_to_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KNOWN = set(config_to_dict(TrainConfig()))
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

idents = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=False), st.text(max_size=10)
)


@SETTINGS
@given(key=idents.filter(lambda k: k not in KNOWN), value=scalars)
def test_unknown_top_level_key_in_file_names_key_and_file(tmp_path, key, value):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({key: value}))
    try:
        load_config(TrainConfig, p)
    except ConfigError as e:
        assert f"'{key}'" in str(e) and str(p) in str(e)
    else:
        raise AssertionError("unknown key accepted")


@SETTINGS
@given(
    sub=idents.filter(
        lambda k: (
            k
            not in {"name", "lr", "weight_decay", "betas", "eps", "momentum", "nesterov", "foreach", "fused"}
        )
    ),
    value=scalars,
)
def test_unknown_nested_override_names_dotted_key(sub, value):
    item = f"optimizer.{sub}={yaml.safe_dump(value, default_flow_style=True).strip().splitlines()[0]}"
    try:
        load_config(TrainConfig, None, [item])
    except ConfigError as e:
        assert f"optimizer.{sub}" in str(e)
    else:
        raise AssertionError(f"unknown key accepted: {item}")


@SETTINGS
@given(
    value=st.one_of(
        st.text(alphabet=string.ascii_letters, min_size=1, max_size=8),
        st.floats(0.1, 9.9),
        st.lists(st.integers(), max_size=3),
        st.booleans(),
    )
)
def test_wrong_type_for_int_field_names_key(value):
    if isinstance(value, float) and value.is_integer():
        value += 0.5
    item = f"epochs={yaml.safe_dump(value, default_flow_style=True).strip().splitlines()[0]}"
    try:
        load_config(TrainConfig, None, [item])
    except ConfigError as e:
        assert "'epochs'" in str(e)
    else:
        raise AssertionError(f"accepted {item}")


@SETTINGS
@given(text=st.text(alphabet="{}[]:,-&*!|>'\"%@` \n\tab1", min_size=1, max_size=40))
def test_arbitrary_yaml_text_either_loads_or_names_the_file(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    try:
        cfg = load_config(TrainConfig, p)
    except ConfigError as e:
        assert str(p) in str(e)
    else:
        assert isinstance(cfg, TrainConfig)


@SETTINGS
@given(raw=st.text(alphabet="{}[]:,-&*!|>'\"%@` ab1=.", min_size=0, max_size=20))
def test_arbitrary_override_text_never_escapes_as_another_error(raw):
    try:
        load_config(TrainConfig, None, [raw])
    except ConfigError as e:
        assert raw in str(e) or "override" in str(e)
