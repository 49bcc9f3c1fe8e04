//! What man/ and completions/ hold, made from the clap definition so that they cannot
//! drift from it: `generated_files_are_current` compares and, with UPDATE_GENERATED=1,
//! rewrites them. Only tests build this.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

use super::command;

/// Every generated file under `root`, with the bytes it must hold.
pub fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for (shell, file) in [
        (Shell::Bash, "oauth-sendmail.bash"),
        (Shell::Zsh, "_oauth-sendmail"),
        (Shell::Fish, "oauth-sendmail.fish"),
    ] {
        files.push((root.join("completions").join(file), completion(shell)));
    }
    files
}

/// The completion script for `shell`.
fn completion(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    if shell != Shell::Bash {
        clap_complete::generate(shell, &mut command(), "oauth-sendmail", &mut script);
        return script;
    }
    // clap_complete (4.6.12 still, clap-rs/clap#6421) spells the state of a hyphenated
    // name one way in its loop (`oauth__sendmail__subcmd__queue`) and another in its case
    // arms (`oauth__subcmd__sendmail__subcmd__queue`), so nothing past the command name
    // completes. Made for a name without a hyphen, the script is consistent; only the
    // `complete` lines, which bind it to the command, need the real name.
    clap_complete::generate(shell, &mut command(), PLACEHOLDER, &mut script);
    let script = String::from_utf8(script).unwrap();
    let binding = format!(" -o default {PLACEHOLDER}\n");
    assert_eq!(script.matches(&binding).count(), 2, "{script}");
    script
        .replace(&binding, " -o default oauth-sendmail\n")
        .into_bytes()
}

const PLACEHOLDER: &str = "oauth_sendmail";
