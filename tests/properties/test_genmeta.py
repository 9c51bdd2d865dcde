"""A1111 generation text: parse, write back, parse again gives the same fields."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from node.catalog.genmeta import format_a1111, parse_a1111

words = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=20)
values = words | st.integers(-(10**6), 10**6).map(str) | st.sampled_from(["a, b", 'q "x"', " pad "])
keys = st.sampled_from(
    ["Steps", "Sampler", "CFG scale", "Seed", "Size", "Model", "Model hash", "Clip skip", "Note"]
)
loras = st.tuples(
    st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.sampled_from(["", ":0.8"])
)


@st.composite
def a1111_texts(draw: st.DrawFn) -> str:
    prompt = draw(words)
    for name, weight in draw(st.lists(loras, max_size=2)):
        prompt += f" <lora:{name}{weight}>"
    lines = [prompt]
    if draw(st.booleans()):
        lines.append("Negative prompt: " + draw(words))
    pairs = [("Steps", str(draw(st.integers(1, 150))))]
    pairs += draw(st.lists(st.tuples(keys, values), max_size=5))
    lines.append(", ".join(f"{key}: {value}" for key, value in pairs))
    return "\n".join(lines)


@settings(max_examples=200)
@given(text=a1111_texts())
@example(text="\nNegative prompt: \nSteps: 1")  # an empty negative prompt was dropped
@example(text="\nSteps: 1, Steps: ")  # an empty value was written bare, then lost
def test_generated_a1111_text_is_stable_through_format(text: str) -> None:
    meta = parse_a1111(text)
    assert parse_a1111(format_a1111(meta)) == meta


@settings(max_examples=200)
@given(text=st.text(max_size=300))
def test_any_text_is_stable_through_format(text: str) -> None:
    meta = parse_a1111(text)
    assert parse_a1111(format_a1111(meta)) == meta
