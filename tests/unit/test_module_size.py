"""Issue 12's rule: no module of the product over 400 lines without a sentence in
its docstring saying why ("Over 400 lines because ..." / "over 400 lines
because ...")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 400
REASON = re.compile(r"over 400 lines because", re.IGNORECASE)


def product_modules() -> list[Path]:
    sources = [ROOT / "libs" / "common" / "src", *(ROOT / "services").glob("*/src")]
    return sorted(path for source in sources for path in source.rglob("*.py"))


def test_the_product_has_modules_to_check() -> None:
    assert len(product_modules()) > 100


def test_long_modules_say_why() -> None:
    silent = []
    for path in product_modules():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") <= LIMIT:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not REASON.search(" ".join(docstring.split())):
            silent.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert silent == [], "modules over 400 lines without a reason in their docstring"
