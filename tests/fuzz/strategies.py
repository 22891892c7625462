"""Hypothesis strategies for lem's input surface: YAML text (random documents with hostile
scalars, tags, anchors and aliases, duplicate keys; deep nesting; alias bombs), mutations
of the shipped configs, ``--set`` items, and command lines over the command tree."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import strategies as st

from lem.coordinator.planning.campaign import TOP_LEVEL
from lem.coordinator.planning.provenance import effective_values
from lem.protocol.config import ExperimentConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = {
    p.relative_to(CONFIGS).as_posix(): p.read_text() for p in sorted(CONFIGS.rglob("*.yaml"))
}
BASE = "name: c\nexperiment:\n  model: {source: builtin, name: lem-tiny}\n"

FIELDS = list(effective_values(ExperimentConfig()))  # every dotted experiment field
KEYS = [*TOP_LEVEL, *FIELDS, *{f.rsplit(".", 1)[-1] for f in FIELDS}, "<<", "backends"]

# Scalars that parse, each odd for lem: NaN, infinities, huge ints, YAML 1.1 booleans and
# dates, explicit tags (some that PyYAML cannot construct), escapes, markup
ODD_SCALARS = [
    ".nan", ".NaN", "-.inf", ".Inf", "+.INF", "1e400", "-1e309", "1e-400", "0.0", "-0",
    "99999999999999999999", "-2147483649", "2147483648", "0x7fffffffffffffff", "0o7777777777",
    "0b" + "1" * 70, "1_000_000_000_000", "190:20:30", "~", "null", "Null", "true", "yes", "on",
    "off", "y", "n", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "!!binary aGVsbG8=",
    "!!float nan", "!!float .inf", "!!int '12'", "!!int 0x", "!!str 12", "!!bool maybe",
    "!!null x", "!!python/object/apply:os.system ['true']", "!!python/name:os.system",
    "!foo bar", "!<tag:yaml.org,2002:int> 3", "!!set {a, b}", "!!omap [{a: 1}]",
    "!!pairs [{a: 1}, {a: 2}]", "!!timestamp 2001-12-14", "!!timestamp nope", "!!map [1]",
    "!!seq {a: 1}", '"\\x1b[31mred\\x1b[0m"', '"\\0"', '"\\e]0;title\\a"', '"\\N\\_\\L\\P"',
    '"\\u202e"', '"\\ud800"', '"a\\tb"', "'[/bold]'", "'[red]x[/red]'", "'<b>&amp;</b>'",
    '"\\U0001F600"', "lem-tiny", "builtin", "cpu", "cuda", "pytorch", "vllm", "sleep", "1",
    "0", "-1", "8", "[]", "{}", "''",
]  # fmt: skip
# Tokens that break a YAML document where a value should be
BREAKING = [
    "*undefined", "&anchor", "<<", "? x", "- x", "|", ">-", "%YAML 1.1", "---", "...", "`x`",
    "@x", "'unterminated", '"unterminated', "[unclosed", "{a: 1", "}", "]", "a: b: c",
]  # fmt: skip

# Characters that break YAML in interesting ways, for raw (unquoted) tokens
YAML_PUNCTUATION = ":-?[]{},#&*!|>'\"%@` \t\n\r\ufeff\x00\x1b\x85\u2028"


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar: what YAML may not hold raw (C0, DEL, C1)
    escaped, the rest as it is."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F or code == 0x85 or 0xA0 <= code <= 0xFFFD or code > 0xFFFF:
            out.append(ch)
        else:
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
    return '"' + "".join(out) + '"'


any_text = st.text(max_size=24)
word = st.text(alphabet=st.sampled_from("abcxyz-_.0123456789/"), min_size=1, max_size=12)
raw_token = st.one_of(
    st.sampled_from(BREAKING),
    st.text(alphabet=st.sampled_from(YAML_PUNCTUATION + "abcx01._/"), max_size=12),
)
# Mostly scalars that parse (so documents reach lem's checks), now and then one that breaks
scalar = st.one_of(
    st.sampled_from(ODD_SCALARS),
    st.sampled_from(ODD_SCALARS),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats().map(repr),
    any_text.map(quoted),
    word,
    word,
    st.integers(0, 15).flatmap(lambda n: raw_token if n == 0 else word),
)
# Mostly keys lem knows; now and then odd text or a key no mapping can hold (a list)
key = st.integers(0, 19).flatmap(
    lambda n: (
        st.sampled_from(KEYS)
        if n > 1
        else any_text.map(quoted)
        if n == 1
        else st.sampled_from(["1", "null", "true", "[a, b]", "{a: 1}", "? [x]", "'name'"])
    )
)


@st.composite
def node(draw: st.DrawFn, depth: int = 0, anchors: list[str] | None = None) -> str:
    """One YAML node in flow style, with optional tag and anchor, or an alias."""
    anchors = [] if anchors is None else anchors
    kinds = ["scalar"] * 4 + (["map", "seq"] if depth < 4 else []) + (["alias"] if anchors else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "alias":  # now and then to an anchor not (yet) defined
        return "*" + draw(st.sampled_from([*anchors, *anchors, *anchors, "nope"]))
    if kind == "scalar":
        text = draw(scalar)
    elif kind == "map":
        items = draw(st.lists(st.tuples(key, node(depth + 1, anchors)), max_size=4))
        text = "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    else:
        text = "[" + ", ".join(draw(st.lists(node(depth + 1, anchors), max_size=4))) + "]"
    if draw(st.integers(0, 39)) == 0:  # a tag, mostly one the node cannot have
        text = draw(st.sampled_from(["!!map ", "!!seq ", "!!str ", "!x ", "!!set "])) + text
    if draw(st.integers(0, 5)) == 0:
        name = f"a{len(anchors)}"  # a name used twice is a YAML error: now and then
        name = draw(st.sampled_from([name] * 9 + anchors[:1]))
        anchors.append(name)
        text = f"&{name} {text}"
    return text


# Keys where they mean something: a campaign's at the top, an experiment's one level in
TOP_KEYS = st.integers(0, 3).flatmap(lambda n: st.sampled_from(TOP_LEVEL) if n else key)
EXPERIMENT_KEYS = st.one_of(st.sampled_from(FIELDS), st.sampled_from(KEYS), key)


@st.composite
def block_mapping(
    draw: st.DrawFn, indent: int = 0, anchors: list[str] | None = None, used: tuple[str, ...] = ()
) -> str:
    """A block mapping: known keys (now and then one already ``used``: a duplicate),
    values in flow or block style."""
    anchors = [] if anchors is None else anchors
    seen = set(used)
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        name = draw(TOP_KEYS if indent == 0 else EXPERIMENT_KEYS if indent == 2 else key)
        if name in seen and draw(st.integers(0, 9)):
            continue
        seen.add(name)
        if indent < 6 and draw(st.integers(0, 3)) == 0:
            lines.append(" " * indent + f"{name}:\n" + draw(block_mapping(indent + 2, anchors)))
        else:
            lines.append(" " * indent + f"{name}: {draw(node(0, anchors))}\n")
    return "".join(lines)


@st.composite
def yaml_document(draw: st.DrawFn) -> str:
    """A campaign file's text: random, built on the minimal valid file, or hostile shapes."""
    kinds = ["random", "over_base", "over_base", "in_experiment", "in_experiment", "deep", "bomb"]
    kind = draw(st.sampled_from(kinds))
    if kind == "random":
        return draw(block_mapping())
    if kind == "over_base":
        return BASE + draw(block_mapping(used=("name", "experiment")))
    if kind == "in_experiment":
        return BASE + draw(block_mapping(indent=2, used=("model",)))
    if kind == "deep":
        n = draw(st.integers(1, 400))
        shape = draw(st.sampled_from(["flow_seq", "flow_map", "block"]))
        if shape == "flow_seq":
            return BASE + "grid: {batch_size: " + "[" * n + "1" + "]" * n + "}\n"
        if shape == "flow_map":
            return BASE + "x: " + "{a: " * n + "1" + "}" * n + "\n"
        return BASE + "".join(" " * i + "k:\n" for i in range(min(n, 200))) + " " * n + "v: 1\n"
    levels = draw(st.integers(1, 9))  # "billion laughs": each level 9 aliases of the last
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return BASE + "\n".join(lines) + f"\ngrid: {{batch_size: *a{levels - 1}}}\n"


@st.composite
def mutated_config(draw: st.DrawFn) -> str:
    """A shipped config with a few line-level mutations."""
    lines = SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))].splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = [BASE]
        at = draw(st.integers(0, len(lines) - 1))
        line = lines[at]
        op = draw(st.sampled_from(["value", "dup", "delete", "insert", "cut", "chars", "key"]))
        indent = line[: len(line) - len(line.lstrip())]
        if op == "value" and ":" in line:
            lines[at] = line.split(":", 1)[0] + ": " + draw(scalar) + "\n"
        elif op == "dup":
            lines.insert(at, line)
        elif op == "delete":
            del lines[at]
        elif op == "insert":
            lines.insert(at, f"{indent}{draw(key)}: {draw(node())}\n")
        elif op == "cut":
            lines[at] = line[: draw(st.integers(0, len(line)))]
        elif op == "chars":
            cut = draw(st.integers(0, len(line)))
            lines[at] = line[:cut] + draw(st.text(min_size=1, max_size=4)) + line[cut:]
        elif op == "key" and ":" in line:
            lines[at] = indent + draw(key) + ":" + line.split(":", 1)[1]
    return "".join(lines)


campaign_text = st.one_of(yaml_document(), mutated_config())

set_item = st.one_of(
    st.tuples(st.sampled_from(FIELDS), scalar).map("=".join),
    st.tuples(st.sampled_from(FIELDS), node()).map("=".join),
    st.tuples(st.sampled_from([*FIELDS, "", " ", "x", "a..b", ".", "name.x"]), any_text).map(
        "=".join
    ),
    st.text(max_size=30),
    st.integers(1, 5000).map(lambda n: "batch_size=" + "[" * n),
    st.integers(0, 80).map(lambda n: "grid=" + "{a: &a [1], b: [" + ", ".join(["*a"] * n) + "]}"),
)

# Argument tokens (NUL bytes are dropped: harness.as_argv); some longer than a file name may be
arg_text = st.one_of(
    st.text(max_size=24),
    st.binary(max_size=24).map(os.fsdecode),  # bytes that are not UTF-8, as sys.argv has them
    st.integers(250, 5000).map(lambda n: "x" * n),
)
