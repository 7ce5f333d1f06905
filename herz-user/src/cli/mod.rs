//! One module per `herz` verb.

pub mod block;
pub mod journal;
pub mod publish;
pub mod run;
pub mod shieldctl;
pub mod stats;
pub mod sub;
pub mod top;

/// The password to log in with: the first line of `file` when given, else `inline` (from
/// `--password` or `HERZ_PASSWORD`).
pub(crate) fn secret(inline: &str, file: Option<&std::path::Path>) -> anyhow::Result<String> {
    match file {
        Some(file) => secret_file(file),
        None => Ok(inline.to_owned()),
    }
}

/// The first line of a secret file (a password, the control plane's token), without its line end.
pub fn secret_file(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read secret file {}: {e}", file.display()))?;
    Ok(text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned())
}
