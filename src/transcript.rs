//! The `-v` transcript's lines on stderr (`-> ` sent, `<- ` received, `-- ` a note),
//! labelled with the connection they belong to while a drain has several at once.

use std::cell::Cell;

thread_local! {
    /// Which of a drain's connections this thread speaks for; none while there is one.
    static CONNECTION: Cell<Option<usize>> = const { Cell::new(None) };
}

/// From now on this thread's lines are connection `n`'s (`[n] -> ...`), or unlabelled.
pub fn label(n: Option<usize>) {
    CONNECTION.with(|c| c.set(n));
}

/// One line of the transcript: `arrow` (`->`, `<-`, `--`), then `text`.
pub fn line(arrow: &str, text: &str) {
    eprintln!("{}", format_line(arrow, text));
}

fn format_line(arrow: &str, text: &str) -> String {
    match CONNECTION.with(Cell::get) {
        Some(n) => format!("[{n}] {arrow} {text}"),
        None => format!("{arrow} {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_connection_only_while_there_are_several() {
        assert_eq!(format_line("->", "MAIL FROM:<a@b>"), "-> MAIL FROM:<a@b>");
        label(Some(2));
        assert_eq!(format_line("<-", "250 ok"), "[2] <- 250 ok");
        // Another thread's connection is its own.
        let other = std::thread::spawn(|| format_line("--", "x"))
            .join()
            .unwrap();
        assert_eq!(other, "-- x");
        label(None);
        assert_eq!(format_line("--", "closed"), "-- closed");
    }
}
