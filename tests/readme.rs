//! The README documents every option of the one option table (and every subcommand).

#[test]
fn readme_lists_every_option_and_command() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for o in kvlb::config::OPTIONS {
        assert!(
            readme.contains(&format!("--{}", o.name)),
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
