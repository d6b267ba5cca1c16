//! The README's Rust blocks are quotes of the code: each opens with a comment
//! naming its file, and the rest must stand there, line for line.

use std::path::Path;

#[test]
fn every_rust_block_in_the_readme_is_quoted_from_the_file_it_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let blocks: Vec<&str> = readme
        .split("```rust\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect();
    assert!(blocks.len() >= 3, "the pattern's blocks are missing");
    for block in blocks {
        let mut lines = block.lines();
        let file = lines
            .next()
            .and_then(|first| first.strip_prefix("// "))
            .unwrap_or_else(|| panic!("a rust block does not open with `// <file>`:\n{block}"));
        let quoted: Vec<&str> = lines.collect();
        let code = std::fs::read_to_string(root.join(file))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        let code: Vec<&str> = code.lines().collect();
        assert!(
            code.windows(quoted.len())
                .any(|window| window == quoted.as_slice()),
            "README quotes {file}, which no longer says:\n{}",
            quoted.join("\n")
        );
    }
}
