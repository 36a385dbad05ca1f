"""A Snakemake report opened in headless Chromium, as a user would: the DOM the report's
JavaScript app renders (tests/test_report.py) and a screenshot (the README's picture).

    python tests/tools/browser.py report.html docs/report.png [RESULT]

saves a screenshot of the report with the menu opened where the result RESULT is (the
file's path, e.g. demo/local_data.ltpa/report/group_differences/scale33.png) and RESULT
shown; without RESULT, the menu Plots > connection counts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--hide-scrollbars", "--virtual-time-budget=10000"]


def find_chromium():
    """Path of a Chromium (or Chrome) binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def open_report(report_html, *, show=None, category=None, subcategory=None, screenshot=None,
                window_size=(1400, 900), chromium=None, timeout=120) -> str:
    """Open a Snakemake report in headless Chromium, as a user would, and return the DOM.

    The report is a JavaScript app: a copy of it gets a few lines that, once the
    app has started, open the ``category``/``subcategory`` in the menu and show
    the result ``show`` (its path in the report, e.g. ``results/report/lengths.png``),
    like clicking them. With ``show`` and no ``category``, the menu where the report
    lists ``show`` is opened. With ``screenshot``, a PNG of the window is saved there.
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium binary on PATH")
    html = Path(report_html).read_text(encoding="utf-8")
    view = {}
    if category:
        view.update(navbarMode="subcategory" if subcategory else "category", category=category)
        if subcategory:
            view["subcategory"] = subcategory
    driver = ("<script>(function () {"
              f"var view = {json.dumps(view)}; var show = {json.dumps(show)};"
              "function where() { for (var c in categories) { for (var s in categories[c]) {"
              " if (categories[c][s].indexOf(show) >= 0) { return [c, s]; } } } return null; }"
              "function go() {"
              " if (typeof app === 'undefined' || !app) { return setTimeout(go, 50); }"
              " if (show && !view.category) { var cs = where(); if (cs) { view.category = cs[0];"
              " view.subcategory = cs[1]; view.navbarMode = 'subcategory'; } }"
              " var r = show ? results[show] : null;"
              " if (r) { view.content = 'img'; view.contentPath = r.data_uri;"
              " view.resultPath = show; }"
              " if (Object.keys(view).length) { app.setView(view); } }"
              " window.addEventListener('load', function () { setTimeout(go, 100); });"
              "})();</script>")
    i = html.rfind("</body>")
    html = html[:i] + driver + html[i:] if i >= 0 else html + driver
    with tempfile.TemporaryDirectory(prefix="ltpa-report-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html, encoding="utf-8")
        base = [chromium, *CHROMIUM_FLAGS, f"--window-size={window_size[0]},{window_size[1]}"]
        dom = subprocess.run(base + [f"--user-data-dir={tmp}/profile", "--dump-dom",
                                     page.as_uri()],
                             capture_output=True, text=True, timeout=timeout, check=True).stdout
        if screenshot:
            subprocess.run(base + [f"--user-data-dir={tmp}/profile2",
                                   f"--screenshot={Path(screenshot).resolve()}", page.as_uri()],
                           capture_output=True, text=True, timeout=timeout, check=True)
    return dom


def rendered_part(dom: str) -> str:
    """The DOM without <script> and <style> contents: what the app rendered."""
    dom = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)
    return re.sub(r"<style\b.*?</style>", "", dom, flags=re.S)


def main(argv) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    show = os.path.abspath(argv[2]) if len(argv) > 2 else None  # the report's keys: absolute
    if show:
        open_report(argv[0], show=show, screenshot=argv[1])
    else:
        open_report(argv[0], category="Plots", subcategory="connection counts",
                    screenshot=argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
