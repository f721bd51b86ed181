//! The code blocks of the README and of `docs/`, as their readers see them.

use std::path::Path;

/// One fenced code block: its language (the info string's first word), whether it is marked
/// `runnable` (the info string's other words), the line its fence opens on, and its text.
#[derive(Debug, Clone)]
pub struct Block {
    pub file: String,
    pub line: usize,
    pub lang: String,
    pub runnable: bool,
    pub text: String,
}

/// A file of the repository, by its path from the root.
pub fn read_doc(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every fenced block of `path`, in order.
pub fn blocks(path: &str) -> Vec<Block> {
    let text = read_doc(path);
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                open = Some(Block {
                    file: path.to_owned(),
                    line: i + 1,
                    lang: words.next().unwrap_or_default().to_owned(),
                    runnable: words.any(|w| w == "runnable"),
                    text: String::new(),
                });
            }
            (Some(_), Some(_)) => blocks.push(open.take().expect("a block is open")),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{path}: a code block is never closed");
    blocks
}

/// The one `sql` block of `path` that contains `marker`, as the page shows it.
pub fn sql_block(path: &str, marker: &str) -> String {
    blocks(path)
        .into_iter()
        .find(|b| b.lang == "sql" && b.text.contains(marker))
        .unwrap_or_else(|| panic!("{path} has no sql block with {marker:?}"))
        .text
}
