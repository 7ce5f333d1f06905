//! The `herz` command.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use herz_user::{
    cli,
    config::{Config, LogFormat},
    logging,
};

/// Herz: a market-data distributor that defends itself in the kernel.
#[derive(Debug, Parser)]
#[command(name = "herz", version, about)]
struct Args {
    /// TOML configuration file (defaults serve a first local run).
    #[arg(long, short = 'c', global = true, env = "HERZ_CONFIG")]
    config: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `debug` or `info,herz_user::shield=debug` (overrides log.level).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Run the daemon: shield, distributor, control plane.
    Run,
    /// Subscribe over SoupBinTCP (or a multicast channel) and print ticks.
    Sub(cli::sub::SubArgs),
    /// Publish ticks (synthetic or from a file) over SoupBinTCP or as a MoldUDP64 feed.
    Pub(cli::publish::PubArgs),
    /// Live view of throughput, subscribers and lag, feeds, and the shield's top sources.
    Top(cli::top::TopArgs),
    /// Print the shield's kernel counters and top sources.
    Stats {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
        /// How many sources to list.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Pin directory (defaults to shield.pin_path of the configuration).
        #[arg(long)]
        pin_path: Option<PathBuf>,
    },
    /// Block a network or address on Herz's ports (from the next packet; `--ttl 30s|5m|1h` to expire).
    Block(cli::block::BlockArgs),
    /// Remove a blocklist entry.
    Unblock(cli::block::CidrArgs),
    /// List the blocklist (manual, config and auto-blocked entries, with their expiry).
    Blocked(cli::block::ListArgs),
    /// Allow a network or address: its traffic passes every shield rule (`--remove` to undo).
    Allow(cli::block::AllowArgs),
    /// Remove an allowlist entry.
    Disallow(cli::block::CidrArgs),
    /// List the allowlist, the allowed feed sources and the trusted sources.
    Allowed(cli::block::ListArgs),
    /// Show the shield's thresholds, or apply the config's [shield] section live.
    Shield(cli::shieldctl::ShieldArgs),
    /// The durable journal's directory: its session, or end that session on purpose.
    Journal(cli::journal::JournalArgs),
}

fn main() {
    let args = Args::parse();
    if let Err(e) = real_main(args) {
        eprintln!("herz: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(args: Args) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(f) = args.log_format {
        config.log.format = f;
    }
    if let Some(l) = args.log_level {
        tracing_subscriber::EnvFilter::try_new(&l)
            .map_err(|e| anyhow::anyhow!("--log-level `{l}`: not a valid level or filter: {e}"))?;
        config.log.level = l;
    }
    let log_reload = logging::init(config.log.format, &config.log.level);
    match args.verb {
        Verb::Run => cli::run::run(config, args.config.clone(), log_reload),
        Verb::Sub(a) => cli::sub::sub(a),
        Verb::Top(a) => cli::top::top(a, &config.control),
        Verb::Journal(a) => cli::journal::journal(&a, config.journal.dir.as_deref()),
        Verb::Pub(a) => cli::publish::publish(a),
        Verb::Stats {
            json,
            top,
            pin_path,
        } => {
            let pin_path = pin_path.unwrap_or_else(|| config.shield.pin_path.clone());
            cli::stats::stats(&pin_path, &config.state.dir, json, top)
        }
        Verb::Block(a) => cli::block::block(&a, &config.shield.pin_path),
        Verb::Unblock(a) => cli::block::unblock(&a, &config.shield.pin_path),
        Verb::Blocked(a) => cli::block::blocked(&a, &config.shield.pin_path),
        Verb::Allow(a) => cli::block::allow(&a, &config.shield.pin_path),
        Verb::Disallow(a) => cli::block::disallow(&a, &config.shield.pin_path),
        Verb::Allowed(a) => cli::block::allowed(&a, &config.shield.pin_path),
        Verb::Shield(a) => cli::shieldctl::shield(&a, &config),
    }
}
