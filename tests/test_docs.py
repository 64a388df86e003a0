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
