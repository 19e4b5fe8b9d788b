"""`report --html`: one self-contained page, rendered by a real browser
(Debian's chromium, headless): it loads without a console error, fetches
nothing, and shows the flagged fault (its red outline is on the screen)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import require

CAPTURE = Path(__file__).parent / "captures" / "demo-tracepoint-6.18.cap"
FLAG_RED = (0xD6, 0x27, 0x28)


def chromium() -> str:
    path = shutil.which("chromium")
    require(path is not None, "no chromium (scripts/setup.sh --test installs it)")
    assert path is not None
    return path


def test_the_page_shows_the_flagged_fault(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "uffdtrace", "report", str(CAPTURE), "--html", str(page)], check=True)
    text = page.read_text()
    assert not re.search(r"(src|href)=|https?://|<script", text)  # self-contained: nothing to fetch or run
    assert 'class="flagged"' in text and "never_woken" in text and "<svg" in text

    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    env = {**os.environ, "HOME": str(tmp_path)}
    run = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1400,1400", page.as_uri()],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert shot.exists(), run.stderr[-2000:]
    assert "CONSOLE" not in run.stderr and "Failed to load" not in run.stderr, run.stderr[-2000:]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         env=env, check=True).stdout
    assert 'class="flagged"' in dom and "FLAG never_woken" in dom

    from PIL import Image

    with Image.open(shot) as img:
        colors = img.convert("RGB").getcolors(1 << 24) or []
        red = sum(n for n, rgb in colors if all(abs(a - b) < 24 for a, b in zip(rgb, FLAG_RED, strict=True)))
    assert red >= 20, red  # the flagged fault's outline, drawn


def test_an_existing_page_is_kept_without_force(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "uffdtrace", "report", str(CAPTURE), "--html", str(page)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "exists: use --force" in proc.stderr and page.read_text() == "mine"
