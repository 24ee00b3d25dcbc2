//! Replays every committed input of every target without libFuzzer: the
//! seeds, and `regressions/` (each input that once crashed a target),
//! so a plain `cargo test` keeps them fixed.

use std::fs;
use std::path::Path;

fn replay(name: &str, target: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = 0;
    for folder in ["seeds", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(folder).join(name)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
        paths.sort();
        for path in paths.iter().filter(|path| path.is_file()) {
            if path.file_name().is_some_and(|name| name == "README.md") {
                continue;
            }
            eprintln!("replaying {}", path.display());
            target(&fs::read(path).unwrap());
            inputs += 1;
        }
    }
    assert!(inputs > 0, "target {name} has seeds");
}

#[test]
fn every_target_replays_its_seeds_and_regressions() {
    for (name, target) in tailwater_fuzz::TARGETS {
        replay(name, target);
    }
}
