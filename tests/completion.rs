//! The shell completions in completions/, tried in the real shells: each script is loaded
//! as a user's shell would load it and asked what follows a partial command line.

mod common;

use std::path::Path;
use std::process::Command;

use common::skip::skip;

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
        Err(e) => {
            skip(
                &format!("{shell} completion"),
                format!("cannot run {shell} ({e}): scripts/install-test-deps installs it"),
            );
            return None;
        }
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

/// What zsh completes for `line`: an interactive zsh on a pseudo-terminal (zpty), its
/// .zshrc loading the script through compinit, gets `line` and a TAB and prints every
/// candidate that reaches compadd.
fn zsh_complete(line: &str) -> Option<Vec<String>> {
    // zsh on its own first, so that a missing zsh is told apart from a hung one.
    run("zsh", &["-f", "-c"], "true")?;
    let zdotdir = tempfile::tempdir().unwrap();
    let completions = Path::new(ROOT).join("completions");
    let zshrc = ZSHRC.replace("COMPLETIONS", completions.to_str().unwrap());
    std::fs::write(zdotdir.path().join(".zshrc"), zshrc).unwrap();
    let out = Command::new("timeout")
        .args(["30", "zsh", "-f", "-c", ZSH_CAPTURE, "zsh"])
        .arg(zdotdir.path())
        .arg(line)
        .env("HOME", zdotdir.path())
        .output()
        .expect("run timeout(1)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zsh failed or hung: {stderr}");
    let out = String::from_utf8_lossy(&out.stdout);
    Some(
        out.split("<hit>")
            .skip(1)
            .filter_map(|rest| rest.split("</hit>").next())
            .map(str::to_string)
            .collect(),
    )
}

/// The interactive zsh's start: our script in $fpath, compinit, a compadd that prints
/// what it is given before it adds it, and a marker when the line editor starts.
const ZSHRC: &str = r#"PROMPT= ; RPROMPT= ; PROMPT_EOL_MARK=
fpath=(COMPLETIONS $fpath)
autoload -Uz compinit && compinit -u -D
compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  typeset -a hits
  builtin compadd -A hits "$@"
  local x; for x in $hits; do print -r -- "<hit>$x</hit>"; done
  builtin compadd "$@"
}
# Typed-ahead input may be dropped while the line editor sets the terminal up: the line
# is typed only once it says it is reading.
zle-line-init() { print -rn -- "<ready>" }
zle -N zle-line-init
"#;

/// $1: the ZDOTDIR holding that .zshrc, $2: the line. The end marker is typed split
/// (`<do""ne>`) so that only its output, not the echo of the typing, matches.
const ZSH_CAPTURE: &str = r#"zmodload zsh/zpty
zpty z "ZDOTDIR=$1 zsh -i"
zpty -r z line '*<ready>*'
zpty -w -n z "$2"$'\t'
zpty -w z $'\C-u print -r -- "<do""ne>"'
zpty -r z out '*<done>*'
print -r -- "$out"
zpty -d z"#;

#[test]
fn zsh_completes_commands_their_subcommands_and_options() {
    for (line, want) in CASES {
        assert_offers("zsh", line, zsh_complete(line), want);
    }
}
