"""Write the HTML template that makes ``dvc plots show`` / ``dvc plots diff`` pages work without internet.

Usage::

    python -m auxseg.tools.plots_page [--out .dvc_plots_page.html]

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so offline every chart is blank. This template
carries the three libraries inline instead, read from the copy that the Python package ``datasette-vega-dashboards``
(a dependency of auxseg, pinned in ``pyproject.toml``) installs: vega 5.22.1, vega-lite 5.2.0 (the version DVC's own
page asks for) and vega-embed 6.20.8. The page therefore loads nothing from the network and stays whole when copied
elsewhere. It has DVC's ``{plot_divs}`` and ``{refresh_tag}`` placeholders and no ``{scripts}`` one, so DVC adds no
CDN ``<script>`` tags.

The pipeline's ``plots_page`` stage runs this (so ``dvc repro`` on a fresh clone writes it) and ``.dvc/config``
points ``plots.html_template`` at it. The bytes depend only on the installed libraries. A missing library is an
error naming the package to install (exit status 2); nothing is written then.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path
from typing import Sequence

from auxseg.io import atomic_write

DEFAULT_OUT = ".dvc_plots_page.html"
"""Where the ``plots_page`` stage writes the template (``.dvc/config``: ``html_template = ../.dvc_plots_page.html``)."""

DISTRIBUTION = "datasette-vega-dashboards"
LIBRARIES = (
    ("vega", "datasette_vega_dashboards/static/vega@5"),
    ("vega-lite", "datasette_vega_dashboards/static/vega-lite@5"),
    ("vega-embed", "datasette_vega_dashboards/static/vega-embed@6"),
)
"""(name, file inside the distribution) in load order: vega-lite needs vega, vega-embed needs both."""

PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")
"""The strings DVC's renderer replaces in a template (dvc_render.html.HTML.embed)."""

_HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
"""
_TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def library_sources() -> list[tuple[str, str, str]]:
    """[(library name, installed file path, JavaScript text)] of vega, vega-lite and vega-embed.

    Raises FileNotFoundError naming the package when it is not installed, ValueError when a file could not be
    inlined safely (it contains ``</script`` or one of DVC's placeholders).
    """
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the Python package '{DISTRIBUTION}' (local copies of vega, vega-lite and vega-embed) is not installed: "
            f"run pip install -e . in the repository root"
        ) from None
    sources = []
    for name, relative in LIBRARIES:
        path = Path(str(distribution.locate_file(relative)))
        if not path.is_file():
            raise FileNotFoundError(f"{path}: {name} not found in the installed package '{DISTRIBUTION}'")
        text = path.read_text(encoding="utf-8")
        bad = [token for token in ("</script", *PLACEHOLDERS) if token in text.lower()]
        if bad:
            raise ValueError(f"{path}: cannot be inlined in an HTML template, it contains {bad[0]!r}")
        sources.append((name, str(path), text))
    return sources


def page_template() -> str:
    """The template text: DVC's page layout with vega, vega-lite and vega-embed inline and no remote resource."""
    scripts = "".join(
        f"    <script>/* {name}, from the Python package {DISTRIBUTION} */\n{text}\n    </script>\n"
        for name, _, text in library_sources()
    )
    return _HEAD + scripts + _TAIL


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"template file to write (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        text = page_template()
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with atomic_write(args.out) as handle:
        handle.write(text.encode("utf-8"))
    print(f"wrote {args.out} ({len(text) // 1024} KiB: vega, vega-lite and vega-embed inline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
