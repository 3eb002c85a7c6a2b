"""The README's settings table is the one the declarations render: editing either alone fails here."""

from __future__ import annotations

from orchestrator.settings import settings_table_markdown
from orchestrator.settings.table import END, GROUPS, START
from tests.support import REPO


def test_readme_settings_table_is_rendered_from_the_declarations() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count(START) == 1 and readme.count(END) == 1
    written = readme[readme.index(START) : readme.index(END) + len(END)]
    assert written == settings_table_markdown(), (
        "README.md's settings table differs from orchestrator/settings/: paste settings_table_markdown()'s output"
    )


def test_every_variable_is_in_the_table_once() -> None:
    table = settings_table_markdown()
    names = [spec.env for _, specs in GROUPS for spec in specs]
    assert len(names) == len(set(names))
    for name in names:
        assert table.count(f"| `{name}`") == 1, name
