//! The README documents every option of the one option table (and every subcommand).

#[test]
fn readme_lists_every_option_and_command() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for o in kvlb::config::OPTIONS {
        assert!(
            mentions_option(&readme, o.name),
            "README.md does not document --{}",
            o.name
        );
    }
    for c in kvlb::cli::COMMANDS {
        assert!(
            readme.contains(&format!("kvlb {}", c.name)),
            "README.md does not mention `kvlb {}`",
            c.name
        );
    }
}

/// Whether `text` has `--name` as a whole option name: not followed by another character of
/// an option name, so `--l2-bytes` does not count as `--l2`.
fn mentions_option(text: &str, name: &str) -> bool {
    let needle = format!("--{name}");
    text.match_indices(&needle).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            && !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn option_names_match_whole() {
    assert!(mentions_option("| `--l2 auto` |", "l2"));
    assert!(mentions_option("--l2=on", "l2"));
    assert!(!mentions_option("| `--l2-bytes BYTES` |", "l2"));
    assert!(!mentions_option("--l2x", "l2"));
    assert!(!mentions_option("---l2", "l2"));
}
