//! `herz top`: a live terminal view of throughput, subscribers and their lag, feeds, and the shield's
//! top sources. Reads the daemon's `/state` endpoint and the shield's pinned maps; works over SSH;
//! `q`, Esc or Ctrl-C quits and restores the terminal.

use std::{
    io::{self, Write as _},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::{
    event::{self, Event, KeyCode, KeyModifiers},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use herz_core::session::Role;
use ratatui::{
    Terminal,
    backend::CrosstermBackend,
    layout::{Constraint, Direction, Layout},
    style::{Modifier, Style},
    widgets::{Block, Borders, Paragraph, Row, Table},
};

use crate::control::state::{SessionView, StateBody};

/// Arguments of `herz top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The daemon's control endpoint (defaults to control.listen of the configuration).
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// Refresh interval, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print one text frame and exit (for scripts and tests).
    #[arg(long)]
    pub once: bool,
    /// The control plane's bearer token file (defaults to control.token_file of the configuration).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
}

/// One sample of the daemon's state.
struct Sample {
    at: Instant,
    state: StateBody,
}

fn fetch(control: SocketAddr, token: Option<&str>) -> anyhow::Result<Sample> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut request = agent.get(&format!("http://{control}/state"));
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let state: StateBody = request
        .call()
        .with_context(|| {
            format!(
                "no herz daemon answering on {control} (is `herz run` up, control.listen right?)"
            )
        })?
        .body_mut()
        .read_json()
        .context("reading /state")?;
    Ok(Sample {
        at: Instant::now(),
        state,
    })
}

fn rate(prev: Option<&Sample>, cur: &Sample, key: &str) -> f64 {
    let Some(p) = prev else { return 0.0 };
    let dt = cur.at.duration_since(p.at).as_secs_f64();
    if dt <= 0.0 {
        return 0.0;
    }
    counter(cur, key).saturating_sub(counter(p, key)) as f64 / dt
}

fn counter(s: &Sample, key: &str) -> u64 {
    s.state.counters.get(key).copied().unwrap_or(0)
}

/// The lines of one frame, as plain text (used by `--once` and as the TUI's content).
fn frame(
    prev: Option<&Sample>,
    cur: &Sample,
    pin_path: Option<&PathBuf>,
) -> Vec<(String, Vec<Vec<String>>)> {
    let s = &cur.state.snapshot;
    let mut sections = Vec::new();
    sections.push((
        format!(
            "herz session {}  journal {}..{}",
            s.session, s.journal_tail, s.journal_head
        ),
        vec![
            vec![
                "in msg/s".into(),
                format!("{:.0}", rate(prev, cur, "journal_appended")),
            ],
            vec![
                "out msg/s (tcp)".into(),
                format!("{:.0}", rate(prev, cur, "subscriber_messages")),
            ],
            vec![
                "out msg/s (multicast)".into(),
                format!("{:.0}", rate(prev, cur, "channel_messages")),
            ],
            vec![
                "slow-consumer events".into(),
                format!(
                    "{} disconnects, {} drop-oldest, {} conflate",
                    counter(cur, "slow_disconnects"),
                    counter(cur, "slow_drop_events"),
                    counter(cur, "slow_conflate_events")
                ),
            ],
        ],
    ));
    let mut subs: Vec<&SessionView> = s.sessions.iter().collect();
    subs.sort_by_key(|v| std::cmp::Reverse(v.lag));
    sections.push((
        format!("sessions ({})", subs.len()),
        std::iter::once(vec![
            "peer".into(),
            "user".into(),
            "role".into(),
            "lag".into(),
            "policy".into(),
            "sent".into(),
        ])
        .chain(subs.iter().take(20).map(|v| {
            vec![
                v.peer.clone(),
                v.user.clone(),
                match v.role {
                    Role::Subscriber => "subscriber".into(),
                    Role::Publisher => "publisher".into(),
                },
                v.lag.to_string(),
                v.policy.name().into(),
                v.sent.to_string(),
            ]
        }))
        .collect(),
    ));
    let feeds: Vec<Vec<String>> = s
        .feeds
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.messages.to_string(),
                match f.idle_secs {
                    Some(idle) => format!("idle {idle:.1}s"),
                    None => "never heard from".into(),
                },
            ]
        })
        .collect();
    sections.push((format!("feeds ({})", feeds.len()), feeds));
    let mut shield_rows = Vec::new();
    match pin_path {
        Some(p) => match (
            crate::shield::pinned::read_globals(p),
            crate::shield::pinned::read_sources(p),
        ) {
            (Ok(g), Ok(rows)) => {
                let drops: Vec<String> =
                    g.0.iter()
                        .filter(|(k, v)| k.starts_with("drop") && *v > 0)
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                shield_rows.push(vec![
                    "drops".into(),
                    if drops.is_empty() {
                        "none".into()
                    } else {
                        drops.join(" ")
                    },
                ]);
                shield_rows.push(vec!["source".into(), "packets / syn / udp".into()]);
                for r in rows.iter().take(10) {
                    shield_rows.push(vec![
                        r.source.to_string(),
                        format!("{} / {} / {}", r.packets, r.tcp_syn, r.udp),
                    ]);
                }
            }
            (Err(e), _) | (_, Err(e)) => shield_rows.push(vec!["unreadable".into(), e.to_string()]),
        },
        None => shield_rows.push(vec!["shield".into(), "not loaded".into()]),
    }
    sections.push(("shield".into(), shield_rows));
    sections
}

/// Runs `herz top`.
pub fn top(args: TopArgs, defaults: &crate::config::ControlConfig) -> anyhow::Result<()> {
    let control = args.control.unwrap_or(defaults.listen);
    let token = args
        .token_file
        .as_deref()
        .or(defaults.token_file.as_deref())
        .map(crate::control::read_token)
        .transpose()?;
    let token = token.as_deref();
    let first = fetch(control, token)?;
    let pin_path = first.state.pin_path.clone();
    if args.once {
        std::thread::sleep(Duration::from_millis(args.interval_ms.min(2000)));
        let second = fetch(control, token)?;
        let mut out = io::stdout().lock();
        for (title, rows) in frame(Some(&first), &second, pin_path.as_ref()) {
            writeln!(out, "== {title}")?;
            for r in rows {
                writeln!(out, "  {}", r.join("  "))?;
            }
        }
        return Ok(());
    }
    enable_raw_mode().context("terminal raw mode (is this a terminal?)")?;
    let mut stdout = io::stdout();
    execute!(stdout, EnterAlternateScreen)?;
    // Restores the terminal however the loop ends.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = disable_raw_mode();
            let _ = execute!(io::stdout(), LeaveAlternateScreen);
        }
    }
    let _restore = Restore;
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout))?;
    let mut prev = Some(first);
    let mut cur = fetch(control, token)?;
    loop {
        let sections = frame(prev.as_ref(), &cur, pin_path.as_ref());
        terminal.draw(|f| {
            let chunks = Layout::default()
                .direction(Direction::Vertical)
                .constraints([
                    Constraint::Length(6),
                    Constraint::Min(8),
                    Constraint::Length(5),
                    Constraint::Length(14),
                ])
                .split(f.area());
            for (i, (title, rows)) in sections.iter().enumerate() {
                if i >= chunks.len() {
                    break;
                }
                let widths = vec![
                    Constraint::Percentage(
                        100 / rows.first().map_or(1, |r| r.len().max(1)) as u16
                    );
                    rows.first().map_or(1, |r| r.len())
                ];
                let table = Table::new(rows.iter().map(|r| Row::new(r.clone())), widths).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(title.as_str())
                        .title_style(Style::default().add_modifier(Modifier::BOLD)),
                );
                f.render_widget(table, chunks[i]);
            }
            let _ = Paragraph::new("q: quit");
        })?;
        let deadline = Instant::now() + Duration::from_millis(args.interval_ms);
        while Instant::now() < deadline {
            if event::poll(deadline.saturating_duration_since(Instant::now()))?
                && let Event::Key(k) = event::read()?
            {
                let ctrl_c =
                    k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                if ctrl_c || k.code == KeyCode::Char('q') || k.code == KeyCode::Esc {
                    return Ok(());
                }
            }
        }
        match fetch(control, token) {
            Ok(next) => {
                prev = Some(std::mem::replace(&mut cur, next));
            }
            Err(e) => return Err(e),
        }
    }
}
