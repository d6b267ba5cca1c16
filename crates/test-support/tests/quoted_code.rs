//! The Rust blocks of README.md and docs/*.md are quotes of the code: each
//! opens with a comment naming its file, from the repository's root, and the
//! rest must stand there, line for line.

use std::path::{Path, PathBuf};

#[test]
fn every_rust_block_of_the_documentation_is_quoted_from_the_file_it_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("docs/").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    pages.insert(0, root.join("README.md"));
    let mut blocks_checked = 0;
    for path in &pages {
        let page = path.strip_prefix(&root).unwrap_or(path).display();
        let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{page}: {error}"));
        let blocks = text.split("```rust\n").skip(1);
        for block in blocks.map(|rest| rest.split("```").next().unwrap_or_default()) {
            let mut lines = block.lines();
            let file = lines
                .next()
                .and_then(|first| first.strip_prefix("// "))
                .unwrap_or_else(|| {
                    panic!("{page}: a rust block does not open with `// <file>`:\n{block}")
                });
            let quoted: Vec<&str> = lines.collect();
            let code = std::fs::read_to_string(root.join(file))
                .unwrap_or_else(|error| panic!("{page} quotes {file}: {error}"));
            let code: Vec<&str> = code.lines().collect();
            assert!(
                !quoted.is_empty() && code.windows(quoted.len()).any(|window| window == quoted),
                "{page} quotes {file}, which no longer says:\n{}",
                quoted.join("\n")
            );
            blocks_checked += 1;
        }
    }
    assert!(blocks_checked >= 3, "the README's pattern is not quoted");
}
