"""TESTING.md names tests that exist, and every test: in each table row, the
last cell names the file of the test (`orders/src/order.rs`, relative to
crates/) and then, in backticks, test functions in it
(`valid_order_gets_its_total`). Each named function must be a test
(#[test], #[tokio::test], #[sqlx::test]) in the file named before it, a row
naming a Rust file must name a test, and every test under crates/ must be
named by a row.

    python3 .ci/check-testing.py    # exit 1 listing what is wrong, else a count
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ROOT / "crates"

CODE = re.compile(r"`([^`]+)`")
NAME = re.compile(r"[a-z_][a-z0-9_]*")
# A test attribute, any further attributes or comments, then the function.
TEST = re.compile(
    r"#\[(?:test|tokio::test|sqlx::test)\b[^\]]*\]"
    r"(?:\s*#\[[^\]]*\]|\s*//[^\n]*)*"
    r"\s*(?:pub\s+)?(?:async\s+)?fn\s+([a-z0-9_]+)"
)


def tests_in(path: pathlib.Path) -> set[str]:
    return set(TEST.findall(path.read_text(encoding="utf-8")))


def main() -> int:
    problems = []
    named: dict[pathlib.Path, set[str]] = {}
    for number, line in enumerate((ROOT / "TESTING.md").read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cell = line.strip().strip("|").split("|")[-1]
        where = f"TESTING.md:{number}"
        file, in_row = None, 0
        for code in CODE.findall(cell):
            if code.endswith(".rs"):
                file = CRATES / code
                if not file.is_file():
                    problems.append(f"{where}: crates/{code} does not exist")
                named.setdefault(file, set())
            elif NAME.fullmatch(code):
                if file is None:
                    problems.append(f"{where}: `{code}` comes before the file it is in")
                    continue
                if file.is_file() and code not in tests_in(file):
                    problems.append(f"{where}: `{code}` is not a test in {file.relative_to(ROOT)}")
                named[file].add(code)
                in_row += 1
        if file is not None and not in_row:
            problems.append(f"{where}: names {file.relative_to(ROOT)} and no test in it")
    for path in sorted(CRATES.rglob("*.rs")):
        if "target" in path.relative_to(ROOT).parts:
            continue
        for test in sorted(tests_in(path) - named.get(path, set())):
            problems.append(f"{path.relative_to(ROOT)}: `{test}` is not in TESTING.md: add a row")
    if problems:
        print("\n".join(problems))
        print(f"check-testing: {len(problems)} problems")
        return 1
    count = sum(len(tests) for tests in named.values())
    print(f"check-testing: TESTING.md names {count} tests in {len(named)} files, every test under crates/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
