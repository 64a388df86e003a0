"""The README's methods table is the registry's (one registry feeds explain, the CLI, the docs and the tests)."""

from pathlib import Path

from unveil.docs import BEGIN, END, methods_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_methods_table_matches_the_registry():
    text = README.read_text()
    block = text[text.index(BEGIN) + len(BEGIN): text.index(END)].strip()
    assert block == methods_table(), "run: python -m unveil.docs --update README.md"


def test_readme_starts_with_the_two_commands():
    head = README.read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_readme_callable_example_runs(capsys):
    """The README's callable-model example runs as written and does what its comments say."""
    text = README.read_text()
    start = text.index("```python", text.index("<!-- example: callable -->")) + len("```python")
    code = text[start: text.index("```", start)]
    namespace: dict = {}
    exec(compile(code, "README.md (callable example)", "exec"), namespace)
    exp, model = namespace["exp"], namespace["model"]
    assert exp.map.shape == (120, 160)
    assert exp.label == model.labels[exp.target]
    assert capsys.readouterr().out.split()[0] == exp.label
