"""The Makefile's entry points run whatever the tree looks like."""

from __future__ import annotations

import re

from tests.conftest import PROJECT_ROOT


def test_a_target_named_like_a_folder_is_phony() -> None:
    # `bench` is a target and a folder: without .PHONY, make compares the folder's time with the
    # venv stamp and, once a file in bench/ changed, says "'bench' is up to date" and runs nothing.
    text = (PROJECT_ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE).group(1).split())  # type: ignore[union-attr]
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", text, re.MULTILINE))
    folders = {target for target in targets if (PROJECT_ROOT / target).is_dir()}
    assert folders, "expected at least the bench target"
    assert folders <= phony, f"targets named like a folder but not .PHONY: {sorted(folders - phony)}"
