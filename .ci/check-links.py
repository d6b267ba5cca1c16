"""Every relative link of the project's Markdown resolves: in README.md,
TESTING.md, docs/*.md and the publishable crates' READMEs, each [text](target),
![image](target) and [label]: target that is not http(s) or mailto names an
existing file or directory, and its #anchor (a same-page one included) a
heading of that page, by GitHub's rules. Links in code blocks and code spans
are not links.

    python3 .ci/check-links.py    # exit 1 listing the broken links, else a count
"""
import functools
import pathlib
import re
import sys
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "TESTING.md", *sorted((ROOT / "docs").glob("*.md")),
         ROOT / "crates/span-links/README.md", ROOT / "crates/span-pacing/README.md"]

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
INLINE = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose(text, spans=True):
    """The text with fenced code blocks (and code spans) blanked, lines kept."""
    kept, fenced = [], None
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence:
            if fenced is None:
                fenced = fence.group(1)
            elif fence.group(1) == fenced:
                fenced = None
            kept.append("")
        elif fenced is not None:
            kept.append("")
        else:
            kept.append(CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line) if spans else line)
    return "\n".join(kept)


def slug(heading):
    """GitHub's anchor for a heading: its text lowercased, punctuation but '-'
    and '_' dropped, spaces turned to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(path):
    """A page's anchors: its headings' slugs, numbered when repeated as GitHub
    numbers them, and any <a name> or <a id>."""
    found, seen = set(), {}
    for line in prose(path.read_text(encoding="utf-8"), spans=False).splitlines():
        found.update(HTML_ID.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(1))
            found.add(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
    return found


def main():
    broken, checked, pages = [], 0, [page for page in PAGES if page.exists()]
    for source in pages:
        page = source.relative_to(ROOT)
        text = prose(source.read_text(encoding="utf-8"))
        found = [*INLINE.finditer(text), *DEFINITION.finditer(text)]
        for offset, target in sorted((m.start(), m.group(1)) for m in found):
            if not target or re.match(r"(https?|mailto):", target, re.IGNORECASE):
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            resolved = (source.parent / urllib.parse.unquote(path)).resolve() if path else source
            where = f"{page}:{text.count(chr(10), 0, offset) + 1}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{where} (no heading #{anchor} in {resolved.relative_to(ROOT)})")
    if broken:
        print(f"check-links: {len(broken)} of {checked} relative links broken:", *broken, sep="\n  ")
        return 1
    print(f"check-links: all {checked} relative links in {len(pages)} pages resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
