//! What several command groups share: confirmation of destructive commands, labels, the time.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use anyhow::{anyhow, bail};
use gatehouse_proto::names::parse_label_arg;

/// Asks on a terminal; off a terminal only `--yes` goes ahead.
pub fn confirm(question: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question}: refusing without --yes when not on a terminal");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("cancelled")
    }
}

/// `--label KEY=VALUE` arguments, checked.
pub fn labels_arg(args: &[String]) -> anyhow::Result<HashMap<String, String>> {
    args.iter()
        .map(|a| parse_label_arg(a).map_err(|e| anyhow!("--label: {e}")))
        .collect()
}

/// Labels as `k=v,k=v` (`-` for none).
pub fn labels_text(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(",")
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    gatehouse_common::now_unix()
}

/// A duration argument (`25s`, `24h`, `30d`) in seconds.
pub fn seconds(text: &str) -> Result<u64, String> {
    humantime::parse_duration(text)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{text:?} is not a duration like 25s, 24h or 30d: {e}"))
}
