"""Every measured figure has one home: docs/benchmark.md, or the README of
span-links or span-pacing for the crate's own. Anywhere else in the repository (pages,
code comments, manifests, scripts), a sentence that states one links there
instead, so that two places can never give two values.

A measured figure is what a run prints and a setting never is: a rate
(orders/s), CPU time per unit of work, bytes per order, a peak memory, a
fraction of a throughput or of a CPU, a speed-up, the time a build or a test
run took. Limits, defaults and sizes that are settings (4 MiB, 10 s, 2048
spans) are not figures. Example output inside a fenced block is output, not
a claim.

    python3 .ci/check-figures.py    # exit 1 listing each figure outside its home
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOMES = {"docs/benchmark.md", "crates/span-links/README.md", "crates/span-pacing/README.md", ".ci/check-figures.py"}
SUFFIXES = {".md", ".rs", ".yaml", ".yml", ".toml", ".py", ".sh", ".example", ""}

NUMBER = r"\d[\d  ,.]*\d[½¾¼k]?|\d[½¾¼k]?"
FRACTION = r"(?:a|one) (?:half|third|quarter|fifth|sixth|tenth)"
FIGURES = [
    ("a rate", rf"(?:{NUMBER})\s*(?:orders|spans|inserts|requests|rows)?/s\b"),
    ("CPU time", rf"(?:{NUMBER})\s*(?:µs|ms|s)\b[^.;]{{0,20}}\bof CPU"),
    ("bytes per order", rf"(?:{NUMBER})\s*(?:OTLP )?bytes (?:per|an?) order"),
    ("a peak memory", rf"(?:{NUMBER})\s*MB\b[^.;]{{0,30}}(?:peak|RSS)"),
    ("a fraction of a throughput or a CPU",
     rf"(?:\b0\.\d+|{FRACTION}|\d+\s?%) of (?:its|the|a)\b[^.;]{{0,30}}\b(?:throughput|CPU|core|raw|what)"),
    ("a share of spans lost",
     rf"(?:dropped|lost|drops)[^.;]{{0,30}}\b\d+\s?%|\b\d+\s?%[^.;]{{0,20}}(?:of (?:its|the) spans|dropped|lost)"),
    ("a speed-up", r"\b(?:times|x) (?:faster|slower|cheaper|larger only)"),
    ("a figure said to be measured", rf"\bmeasured\b[^.;()]{{0,50}}?\b(?:{NUMBER})\b(?!-)"),
    ("a build or test time", rf"(?:took|takes|adds|measured)[^.;]{{0,40}}\b(?:{NUMBER})\s*(?:min|minutes|seconds)\b"),
]
PATTERN = re.compile("|".join(f"(?P<f{i}>{regex})" for i, (_, regex) in enumerate(FIGURES)),
                     re.IGNORECASE)
FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def tracked():
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.split()
    return [name for name in names if name not in HOMES and pathlib.Path(name).suffix in SUFFIXES
            and not name.startswith(".ci/tools/") and (ROOT / name).is_file()]


def lines(name):
    """The file's lines, joined in pairs so a figure broken over two lines is
    seen; in Markdown, fenced blocks (example output) are blank."""
    text = (ROOT / name).read_text(encoding="utf-8", errors="replace").splitlines()
    if name.endswith(".md"):
        fenced = False
        for index, line in enumerate(text):
            if FENCE.match(line):
                fenced = not fenced
                text[index] = ""
            elif fenced:
                text[index] = ""
    for index, line in enumerate(text):
        following = text[index + 1].lstrip(" /#*-|") if index + 1 < len(text) else ""
        yield index + 1, line, f"{line.rstrip()} {following}"


def main():
    found = set()
    for name in tracked():
        for number, line, joined in lines(name):
            for match in PATTERN.finditer(joined):
                if match.start() >= len(line.rstrip()):
                    continue  # seen again on the next line
                kind = FIGURES[int(match.lastgroup[1:])][0]
                found.add((name, number, kind, match.group(0).strip()))
    for name, number, kind, text in sorted(found):
        print(f"{name}:{number}: {kind} outside docs/benchmark.md: {text!r}")
    if found:
        print(f"check-figures: {len(found)} measured figures outside their home: state them in "
              "docs/benchmark.md (or crates/span-links/README.md for the crate's own) and link there")
        return 1
    print(f"check-figures: {len(tracked())} files, every measured figure in its home")
    return 0


if __name__ == "__main__":
    sys.exit(main())
