//! Printing: aligned tables for people, JSON for scripts, and readable times.

use std::time::Duration;

pub use gatehouse_proto::text::escape;

/// `println!` for people: the whole line is escaped, since it may show stored text that a host
/// or another caller chose (our own format strings hold no control characters).
macro_rules! say {
    () => { println!() };
    ($($arg:tt)*) => { println!("{}", $crate::output::escape(&format!($($arg)*))) };
}
pub(crate) use say;

/// Prints rows under a header, columns padded to the widest cell. Every cell is escaped
/// ([`escape`]): stored text from hosts and callers cannot move the cursor, forge a row or
/// rewrite the terminal.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| escape(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints a list: a JSON array for scripts, or a table for people.
pub fn list<T: serde::Serialize>(
    out: crate::Output,
    items: &[T],
    header: &[&str],
    row_of: impl Fn(&T) -> Vec<String>,
) {
    if out == crate::Output::Json {
        json(&items);
    } else {
        let rows: Vec<Vec<String>> = items.iter().map(row_of).collect();
        table(header, &rows);
    }
}

/// Prints `value` as JSON for scripts, or what `text` prints for people.
pub fn show<T: serde::Serialize>(out: crate::Output, value: &T, text: impl FnOnce()) {
    if out == crate::Output::Json {
        json(value);
    } else {
        text();
    }
}

/// Prints JSON: an API message as its fields.
pub fn json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("messages serialise")
    );
}

/// Prints one value as one line of JSON (a stream of lines for scripts).
pub fn json_line(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string(value).expect("values serialise")
    );
}

/// A Unix time as RFC 3339, or "-" for 0.
pub fn time(unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    gatehouse_common::rfc3339(unix)
}

/// A Unix time as "5m ago" / "in 1h", or "-" for 0.
pub fn relative(unix: i64, now: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    let d = (now - unix).unsigned_abs();
    let text = humantime::format_duration(Duration::from_secs(d)).to_string();
    let short = text.split(' ').take(2).collect::<Vec<_>>().join(" ");
    if unix <= now {
        format!("{short} ago")
    } else {
        format!("in {short}")
    }
}

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
