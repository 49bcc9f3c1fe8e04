//! `newaliases`, `sendmail -bi`: every alias of the configuration must resolve to
//! qualified addresses; the summary names the file and the count.

use std::io::{self, Write};

use crate::commands::stdout_error;
use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::message::address::Resolver;

/// Checks every alias, then prints the summary on stdout.
pub fn check(config: &Config) -> Result<()> {
    check_to(config, &mut io::stdout().lock())
}

fn check_to(config: &Config, out: &mut impl Write) -> Result<()> {
    let resolver = Resolver::new(&config.aliases, config.domain.as_deref());
    for name in config.aliases.keys().filter(|name| *name != "*") {
        resolver
            .recipient(name)
            .map_err(|e| Error::new(Kind::Config, format!("alias `{name}` does not resolve"), e))?;
    }
    let source = config
        .path
        .as_deref()
        .map_or("no configuration file".into(), |p| p.display().to_string());
    writeln!(out, "{source}: {} aliases", config.aliases.len()).map_err(stdout_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn checked(text: &str) -> Result<String> {
        let config = Config::parse(text, Path::new("/c.toml")).unwrap();
        let mut out = Vec::new();
        check_to(&config, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn the_summary_names_the_file_and_counts_the_aliases() {
        let text = "domain = \"x.org\"\n[aliases]\nroot = \"ops\"\nops = [\"a@x.org\", \"b\"]\n";
        assert_eq!(checked(text).unwrap(), "/c.toml: 2 aliases\n");
    }

    #[test]
    fn an_alias_that_does_not_resolve_is_named() {
        let err = checked("[aliases]\nroot = \"nobody\"\n").unwrap_err();
        assert_eq!(err.exit_code(), 78);
        assert!(err.to_string().contains("alias `root`"), "{err}");
    }
}
