"""Screenshot of a report's time view in headless Chromium (the README's gallery picture).

    python scripts/timeview_screenshot.py RUN_OR_PLAN_DIR OUT.png [--t SECONDS]

Builds DIR/report.html (netemu report), opens it offline, moves the slider to the frame nearest
`--t` (default: the middle of the window), fails on any console error, and captures the view.
Needs Chromium and the websocket-client package (pip install -e '.[test]').
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from browser import Page  # noqa: E402

from netemu.report import build_report  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("out")
    ap.add_argument("--t", type=float, default=None)
    ap.add_argument("--width", type=int, default=1200)
    args = ap.parse_args()
    t = time.perf_counter()
    report = build_report(args.dir)
    print(f"report in {time.perf_counter() - t:.1f} s")
    with Page(report.as_uri(), args.width, 1100) as page:
        page.wait_for("window.netemuView", 120)
        ts = page.eval("netemuView.data.t_s")
        want = args.t if args.t is not None else (ts[0] + ts[-1]) / 2
        f = min(range(len(ts)), key=lambda i: abs(ts[i] - want))
        page.eval(f"(function(){{var s=document.getElementById('nv-slider');s.value='{f}';"
                  "s.dispatchEvent(new Event('input'));})()")
        page.screenshot(Path(args.out), "#nv")
        if page.errors:
            print("\n".join(page.errors), file=sys.stderr)
            return 1
    print(f"wrote {args.out} (t = {ts[f]:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
