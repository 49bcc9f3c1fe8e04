//! The shell completions in completions/, tried in the real shells: each script is loaded
//! as a user's shell would load it and asked what follows a partial command line.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `script` with `shell`'s `args`; `None` (the test skips) when the shell is not
/// installed and this is not CI, where scripts/install-test-deps must have installed it.
fn run(shell: &str, args: &[&str], script: &str) -> Option<String> {
    let out = match Command::new(shell)
        .args(args)
        .arg(script)
        .current_dir(ROOT)
        .env("HOME", std::env::temp_dir())
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: cannot run {shell} ({e}); scripts/install-test-deps installs it");
            return None;
        }
        Err(e) => panic!("cannot run {shell} ({e}): run scripts/install-test-deps"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{shell} failed: {stderr}");
    assert!(stderr.is_empty(), "{shell} complained: {stderr}");
    Some(String::from_utf8(out.stdout).unwrap())
}

/// What bash completes for `line` (the word under the cursor is its last, maybe empty),
/// through the function the script binds to `oauth-sendmail`, as bash would call it.
fn bash_complete(line: &str) -> Option<Vec<String>> {
    let script = format!(
        r#"source completions/oauth-sendmail.bash
line='{line}'
read -ra COMP_WORDS <<< "$line"
[[ $line == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE=$line
COMP_POINT=${{#line}}
function=$(complete -p oauth-sendmail | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
"$function" oauth-sendmail "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    let out = run("bash", &["--norc", "--noprofile", "-c"], &script)?;
    Some(out.lines().map(str::to_string).collect())
}

/// What fish completes for `line`, candidates only (fish adds a tab and a description).
fn fish_complete(line: &str) -> Option<Vec<String>> {
    let script = format!("source completions/oauth-sendmail.fish; complete --do-complete '{line}'");
    let out = run("fish", &["--no-config", "-c"], &script)?;
    Some(
        out.lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect(),
    )
}

fn assert_offers(shell: &str, line: &str, got: Option<Vec<String>>, want: &[&str]) {
    let Some(got) = got else { return };
    for word in want {
        assert!(
            got.iter().any(|g| g == word),
            "{shell}: `{line}<TAB>` does not offer {word}; it offers {got:?}"
        );
    }
}

/// The cases that clap_complete's bash script got wrong for a name with a hyphen: nothing
/// past the command's name completed (issue 9, item 22).
const CASES: &[(&str, &[&str])] = &[
    (
        "oauth-sendmail ",
        &["send", "queue", "log", "login", "logout", "status"],
    ),
    (
        "oauth-sendmail queue ",
        &["list", "flush", "show", "retry", "remove"],
    ),
    (
        "oauth-sendmail send --",
        &["--dry-run", "--account", "--config", "--help"],
    ),
    ("oauth-sendmail queue remove --", &["--all", "--config"]),
    (
        "oauth-sendmail log --",
        &["--since", "--status", "--format", "--config"],
    ),
    (
        "oauth-sendmail log --status ",
        &["sent", "queued", "deferred", "bounced", "failed"],
    ),
    (
        "oauth-sendmail login --",
        &["--account", "--device", "--no-browser", "--config"],
    ),
];

#[test]
fn bash_completes_commands_their_subcommands_and_options() {
    for (line, want) in CASES {
        assert_offers("bash", line, bash_complete(line), want);
    }
}

#[test]
fn fish_completes_commands_their_subcommands_and_options() {
    for (line, want) in CASES {
        assert_offers("fish", line, fish_complete(line), want);
    }
}

/// zsh cannot be asked for completions without a terminal; the script must at least load
/// in zsh's completion system and define the function `compdef` names.
#[test]
fn zsh_script_loads_and_defines_its_function() {
    let dir = Path::new(ROOT).join("completions");
    let script = format!(
        "fpath=({} $fpath); autoload -Uz compinit; compinit -u -D; autoload -Uz _oauth-sendmail; \
         whence -w _oauth-sendmail; zsh -n {}/_oauth-sendmail && echo parsed",
        dir.display(),
        dir.display()
    );
    let Some(out) = run("zsh", &["-f", "-c"], &script) else {
        return;
    };
    assert!(out.contains("_oauth-sendmail: function"), "{out}");
    assert!(out.contains("parsed"), "{out}");
}
