//! README.md's tour as data: its section, its fenced blocks, and its
//! `tailwater …` commands split as the shell would (`tour.rs` runs them
//! against the demo).

/// README.md's tour section.
pub fn tour() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let tour = readme
        .split_once("\n## A five-minute tour")
        .expect("README.md has the tour")
        .1;
    tour.split("\n## ").next().unwrap().to_owned()
}

/// The lines of the fenced blocks that open with `fence` (```` ```sh ````,
/// or a bare ```` ``` ````).
pub fn blocks(text: &str, fence: &str) -> Vec<String> {
    let mut lines = Vec::new();
    // The fence of the block the line is in, if any.
    let mut block: Option<&str> = None;
    for line in text.lines() {
        if line.starts_with("```") {
            block = match block {
                Some(_) => None,
                None => Some(line.trim()),
            };
            continue;
        }
        if block == Some(fence) {
            lines.push(line.to_owned());
        }
    }
    lines
}

/// The `tailwater …` lines of the `sh` blocks of README.md's tour, as
/// words, their comments cut.
pub fn tour_commands() -> Vec<Vec<String>> {
    blocks(&tour(), "```sh")
        .iter()
        .filter(|line| line.starts_with("tailwater "))
        .map(|line| words(line))
        .collect()
}

/// A line split as the shell would: single and double quotes, and a `#`
/// that starts a word begins a comment.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '#') if word.is_none() => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

#[test]
fn tour_lines_are_split_as_the_shell_does() {
    assert_eq!(
        words(r#"tailwater logs --grep "out of memory" --since 15m  # word search"#),
        [
            "tailwater",
            "logs",
            "--grep",
            "out of memory",
            "--since",
            "15m"
        ]
    );
    assert_eq!(
        words("tailwater logs --where 'runner_re=gpu-a100-.*'     # any filter"),
        ["tailwater", "logs", "--where", "runner_re=gpu-a100-.*"]
    );
}
