"""Property-based tests of config loading: random documents, wrong types, unknown keys, overrides.

Whatever a recipe file or a ``key=value`` override holds, ``load_config`` / ``config_from_dict``
return a valid ``Config`` or raise ``ConfigError`` whose message names the offending key. The key
lists are read from each family's config class (``FAMILIES``), so new keys are fuzzed as soon as
they exist, in the family whose ``model.name`` the document names.
"""

from __future__ import annotations

import math
import tempfile
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from reidkit.config import FAMILIES, Config, ConfigError, config_from_dict, load_config
from reidkit.models import TRAINED_BY

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# one model name per family: the documents of a family name it as model.name
FAMILY_MODEL = {family: min(m for m, f in TRAINED_BY.items() if f == family) for family in FAMILIES}
SECTIONS: dict[str, dict[str, type]] = {
    family: {name: field.annotation for name, field in cls.model_fields.items()}
    for family, cls in FAMILIES.items()}
KEYS: list[tuple[str, str, str, FieldInfo]] = [
    (family, section, key, field)
    for family, sections in SECTIONS.items()
    for section, model in sections.items()
    for key, field in model.model_fields.items()
]
KEY_NAMES = sorted({key for *_, key, _ in KEYS} | {s for sections in SECTIONS.values() for s in sections})
ALL_SECTIONS = sorted({s for sections in SECTIONS.values() for s in sections})


def of_family(family: str, raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` naming the family's model (unless its model section is not a mapping)."""
    model = raw.get("model", {})
    return {**raw, "model": {"name": FAMILY_MODEL[family], **model}} if isinstance(model, dict) else raw


def members(annotation: Any) -> list[Any]:
    """The types a field accepts: the members of a union (``None`` included), or the type itself."""
    if get_origin(annotation) in (Union, types.UnionType):
        return list(get_args(annotation))
    return [annotation]


def number_kind(field: FieldInfo) -> type | None:
    """``int`` or ``float`` for a numeric field (optional or not), else None."""
    kinds = [k for k in members(field.annotation) if k is not type(None)]
    return kinds[0] if kinds in ([int], [float]) else None


# --- values of every wrong shape -------------------------------------------------------------------

WORD = st.text(max_size=8).map(lambda s: "x" + s)  # never parses as a number or a boolean
INTS = st.integers(-10**6, 10**6)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
INT_LIST = st.lists(INTS, max_size=3)
SOME_DICT = st.dictionaries(WORD, INTS, max_size=2)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), INTS, FLOATS, st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner,
                                                                          max_size=3)),
    max_leaves=8,
)
# Shapes of YAML values. A shape is a wrong value for a field when no member type of the field
# accepts it under any reading (booleans for numbers are left to the strictness test below).
SHAPES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "word": WORD,
    "integer": INTS.filter(lambda i: i not in (0, 1)),  # 0 and 1 also read as booleans
    "fraction": FLOATS.filter(lambda f: not f.is_integer()),
    "boolean": st.booleans(),
    "int list": INT_LIST,
    "word list": st.lists(WORD, min_size=1, max_size=3),
    "int mapping": SOME_DICT,
    "word mapping": st.dictionaries(WORD, WORD, min_size=1, max_size=2),
}


def accepted_shapes(kind: Any) -> set[str]:
    origin = get_origin(kind)
    if kind is type(None):
        return {"null"}
    if kind is int:
        return {"integer", "boolean"}
    if kind is float:
        return {"integer", "fraction", "boolean"}
    if kind is bool:
        return {"boolean"}
    if kind is str:
        return {"word"}
    if origin is Literal:
        assert not any(str(choice).startswith("x") for choice in get_args(kind))
        return set()
    if origin is list and get_args(kind) == (int,):
        return {"int list"}
    if origin is dict and get_args(kind)[1] is Any:
        return {"int mapping", "word mapping"}
    if origin is dict and get_args(kind)[1] is float:
        return {"int mapping"}
    raise AssertionError(f"no shapes known for {kind}; teach this test the new type")


def wrong_values(annotation: Any) -> st.SearchStrategy[Any]:
    """Values whose type is none of the field's types, under any reading of them."""
    accepted = set().union(*(accepted_shapes(kind) for kind in members(annotation)))
    return st.one_of([shape for name, shape in SHAPES.items() if name not in accepted])


def out_of_range(field: FieldInfo) -> st.SearchStrategy[float] | None:
    """Numbers just outside one of the field's bounds (integers for an int field), or None."""
    integral = number_kind(field) is int
    outside: list[st.SearchStrategy[float]] = []
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Gt | annotated_types.Ge):
            limit = bound.gt if isinstance(bound, annotated_types.Gt) else bound.ge
            allowed = isinstance(bound, annotated_types.Ge)  # the limit itself is valid
            outside.append(
                st.integers(-10**9, math.ceil(limit) - 1 if allowed else math.floor(limit)) if integral
                else st.floats(-1e9, limit, exclude_max=allowed))
        elif isinstance(bound, annotated_types.Lt | annotated_types.Le):
            limit = bound.lt if isinstance(bound, annotated_types.Lt) else bound.le
            allowed = isinstance(bound, annotated_types.Le)
            outside.append(
                st.integers(math.floor(limit) + 1 if allowed else math.ceil(limit), 10**9) if integral
                else st.floats(limit, 1e9, exclude_min=allowed))
    return st.one_of(outside) if outside else None


def raises_naming(raw: Any, *names: str, family: str = "id-triplet") -> ConfigError:
    with pytest.raises(ConfigError) as err:
        config_from_dict(of_family(family, raw) if isinstance(raw, dict) else raw)
    message = str(err.value)
    assert any(name in message for name in names), message
    return err.value


# --- wrong types, bad values, unknown keys ---------------------------------------------------------

PER_KEY = settings(FUZZ, max_examples=8)  # every key gets its own test, so fewer examples each


def key_params(keep: Any = lambda field: True) -> list[Any]:
    return [pytest.param(fam, s, k, f, id=f"{FAMILY_MODEL[fam]}-{s}.{k}") for fam, s, k, f in KEYS
            if keep(f)]


def test_key_table_covers_the_models() -> None:
    for family, sections in SECTIONS.items():
        count = sum(len(model.model_fields) for model in sections.values())
        assert count == sum(1 for fam, *_ in KEYS if fam == family) > 30, family
    assert {"loss", "dynamic"} <= set(SECTIONS["id-triplet"]) and "mtdnet" in SECTIONS["mtdnet"]


@pytest.mark.parametrize(("family", "section", "key", "field"), key_params())
@PER_KEY
@given(data=st.data())
def test_wrong_type_for_every_key(family: str, section: str, key: str, field: FieldInfo,
                                  data: st.DataObject) -> None:
    value = data.draw(wrong_values(field.annotation), label=f"{section}.{key}")
    raises_naming({section: {key: value}}, f"{section}.{key}", family=family)


@pytest.mark.parametrize(("family", "section", "key", "field"),
                         key_params(lambda f: out_of_range(f) is not None))
@PER_KEY
@given(data=st.data())
def test_out_of_range_for_every_bounded_key(family: str, section: str, key: str, field: FieldInfo,
                                            data: st.DataObject) -> None:
    value = data.draw(out_of_range(field), label=f"{section}.{key}")
    raises_naming({section: {key: value}}, f"{section}.{key}", family=family)


@FUZZ
@given(st.sampled_from(sorted(FAMILIES)), st.data(),
       st.one_of(INTS, FLOATS, WORD, st.booleans(), INT_LIST))
def test_section_of_wrong_type(family: str, data: st.DataObject, value: Any) -> None:
    section = data.draw(st.sampled_from(sorted(SECTIONS[family])))
    raises_naming({section: value}, section, family=family)


@FUZZ
@given(st.sampled_from(sorted(FAMILIES)), st.sampled_from(["<root>", *ALL_SECTIONS]),
       st.text(min_size=1, max_size=12).filter(lambda k: k not in KEY_NAMES), JSONISH)
def test_unknown_key_at_every_level(family: str, level: str, key: str, value: Any) -> None:
    raw = {key: value} if level == "<root>" else {level: {key: value}}
    # a section of the other family is refused whole, naming it
    named = key if level == "<root>" else f"{level}.{key}" if level in SECTIONS[family] else level
    raises_naming(raw, named, family=family)


@pytest.mark.parametrize(("family", "section", "key", "field"),
                         key_params(lambda f: number_kind(f) is not None))
@pytest.mark.parametrize("value", [True, False, math.inf, -math.inf, math.nan])
def test_booleans_and_non_finite_numbers_are_not_numbers(family: str, section: str, key: str,
                                                         field: FieldInfo, value: Any) -> None:
    """``epochs: yes`` must not train one epoch, nor ``lr: .inf`` start at all."""
    raises_naming({section: {key: value}}, f"{section}.{key}", family=family)


@FUZZ
@given(st.sampled_from([math.inf, math.nan]))
def test_non_finite_fixed_weight(value: float) -> None:
    raises_naming({"dynamic": {"fixed_weights": {"id": value, "tp": 1.0}}}, "dynamic.fixed_weights")


# --- whole documents -------------------------------------------------------------------------------


def load_text(text: str | bytes) -> Config | ConfigError:
    """Write a recipe file and load it: the Config, or the ConfigError raised (naming the file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        try:
            return load_config(path)
        except ConfigError as err:
            return err


SECTION_DOC = st.dictionaries(
    st.sampled_from(ALL_SECTIONS),
    st.dictionaries(st.sampled_from(KEY_NAMES), JSONISH, max_size=3),
    max_size=3,
)


@FUZZ
@given(st.one_of(JSONISH, SECTION_DOC))
def test_random_documents(document: Any) -> None:
    result = load_text(yaml.safe_dump(document))
    if isinstance(result, ConfigError):
        assert "recipe.yaml" in str(result)
    elif isinstance(document, dict):  # what validated is exactly what the file said
        for section, values in document.items():
            for key, value in values.items():
                assert getattr(getattr(result, section), key) == value, (section, key)


@FUZZ
@given(st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.lists(st.sampled_from(["train:", "  epochs: 3", "- a", "{", "}", "[", "]", ": x", "&a x", "*a",
                              "!!python/object:os.system x", "? [a]", ": 1", "\t", "---", "...",
                              "optim: {lr: .inf}", "a: &b [*b]", "%YAML 1.1"]),
             max_size=8).map("\n".join),
))
@example(b"\xff\xfetrain: {}")
@example("[" * 1000 + "]" * 1000)
def test_random_text(text: str | bytes) -> None:
    result = load_text(text)
    if isinstance(result, ConfigError):
        assert "recipe.yaml" in str(result)


# --- overrides -------------------------------------------------------------------------------------

SEGMENT = st.one_of(st.sampled_from(KEY_NAMES), st.text(max_size=6))
OVERRIDE_KEY = st.lists(SEGMENT, min_size=1, max_size=3).map(".".join)
OVERRIDE_VALUE = st.one_of(
    st.text(max_size=12), INTS.map(str), FLOATS.map(repr),
    st.sampled_from(["true", "null", "~", "[1, 2]", "{a: 1}", "[", "]", "!!binary x", "- a", "'", '"',
                     "&a", "*a", ".inf", ".nan", "yes", "2020-01-01", "0x1f", "1_000", "[" * 1000]),
)
OVERRIDE = st.one_of(st.builds(lambda k, v: f"{k}={v}", OVERRIDE_KEY, OVERRIDE_VALUE),
                     st.text(max_size=20))


@FUZZ
@given(st.lists(OVERRIDE, max_size=4))
@example(["train.epochs=" + "[" * 1000])
def test_random_overrides(overrides: list[str]) -> None:
    try:
        load_config(None, overrides)
    except ConfigError as err:
        # the message quotes an override, or names a key path that one of them set
        message = str(err)
        keys = [o.partition("=")[0].strip().split(".")[0] for o in overrides]
        assert any(o in message or repr(o) in message for o in overrides) \
            or any(k and k in message for k in keys), message


def _open_int(field: FieldInfo) -> bool:
    """An int key that accepts every integer from 1 up."""
    return number_kind(field) is int and all(
        isinstance(b, annotated_types.Gt) and b.gt <= 0 or isinstance(b, annotated_types.Ge) and b.ge <= 1
        for b in field.metadata)


@FUZZ
@given(st.sampled_from([(fam, s, k) for fam, s, k, f in KEYS
                        if _open_int(f) and (fam, s) != ("id-triplet", "sampler")]),
       st.integers(1, 10**6))
def test_valid_integer_override_lands(key: tuple[str, str, str], value: int) -> None:
    family, section, name = key
    cfg = load_config(None, [f"model.name={FAMILY_MODEL[family]}", f"{section}.{name}={value}"])
    assert type(cfg) is FAMILIES[family]
    assert getattr(getattr(cfg, section), name) == value
