//! `herz journal`: what a durable journal directory holds, and ending its session on purpose.

use std::path::PathBuf;

use anyhow::Context as _;

/// Arguments of `herz journal`.
#[derive(Debug, clap::Args)]
pub struct JournalArgs {
    #[command(subcommand)]
    what: JournalVerb,
    /// The journal directory (defaults to journal.dir of the configuration).
    #[arg(long, global = true, value_name = "PATH")]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum JournalVerb {
    /// The directory's session, segments and size.
    Info,
    /// End the directory's session: its segments move to `archive/<session>-<time>/`, and the next
    /// `herz run` starts a new session at sequence 1 (journal.session, or `HZ` + the date). Refused
    /// while a daemon holds the directory.
    NewSession,
}

/// Runs `herz journal`.
pub fn journal(args: &JournalArgs, configured: Option<&std::path::Path>) -> anyhow::Result<()> {
    let dir = args
        .dir
        .as_deref()
        .or(configured)
        .context("no journal directory: give --dir or set journal.dir")?;
    match args.what {
        JournalVerb::Info => {
            let info = crate::store::info(dir)?;
            match info.session {
                Some(session) => println!(
                    "{}: session {session}, {} segments from sequence {}, {} bytes",
                    dir.display(),
                    info.segments,
                    info.first_seq.unwrap_or(1),
                    info.bytes
                ),
                None => println!(
                    "{}: no journal yet (a new session starts here)",
                    dir.display()
                ),
            }
        }
        JournalVerb::NewSession => match crate::store::archive_session(dir)? {
            Some(archive) => println!(
                "session ended; its segments are in {}; the next start begins a new session",
                archive.display()
            ),
            None => println!("{}: no journal; nothing to end", dir.display()),
        },
    }
    Ok(())
}
