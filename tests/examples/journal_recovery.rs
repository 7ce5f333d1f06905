//! How long reopening a large durable journal takes: `cargo xtask bench journal-recovery` runs this.
//!
//! Writes about GB gigabytes of 64-byte messages into a journal directory with
//! `herz_user::store::open` (segments of 256 MiB of records, as many full segments as that takes;
//! the newest one is full but, as always, not sealed), then times reopening it, as the daemon does
//! at start (`took_ms` of its "journal recovered" line, `herz_journal_recovery_seconds`):
//!
//! - clean, page cache warm; clean, page cache dropped (`sync`, `vm.drop_caches = 1`, root only);
//! - after a crash mid-append: the newest segment's last record torn (its last 16 bytes zeroed,
//!   its index entry written), warm and cold;
//! - the same journal after one more append, so that the newest segment holds a single message
//!   (the best case: every other segment is sealed and only its index is checked), warm and cold.
//!
//! Each timed open is repeated (medians). The directory is removed at the end, on failure, and on
//! SIGINT/SIGTERM; one left over by an earlier run is removed first.
//!
//! Usage: `journal_recovery DIR [GB]` (GB of message payload, decimal; default 10).

use std::{
    fs::{self, OpenOptions},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use herz_core::{
    engine::journal::{
        durable::{DurableConfig, OpenReport},
        segment::{HEADER_LEN, Layout, RECORD_OVERHEAD},
    },
    protocol::moldudp64::Session,
};
use herz_user::store;

const SEGMENT_BYTES: usize = 256 << 20;
const SIZE: usize = 64;
const REPEAT: usize = 3;
/// Bytes of the newest record zeroed to tear it.
const TEAR: u64 = 16;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    Ok(())
}

/// Removes the journal directory when dropped: at the end, on an error, on a panic.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.exists() {
            eprintln!("journal_recovery: removing {}", self.0.display());
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn config() -> DurableConfig {
    DurableConfig {
        segment_bytes: SEGMENT_BYTES,
        max_bytes: u64::MAX,
        max_messages: u64::MAX,
        max_message_len: 1024,
    }
}

fn session() -> Session {
    Session::new("HZRECOVERY").expect("a valid session")
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn message(seq: u64) -> [u8; SIZE] {
    let mut m = [b' '; SIZE];
    m[0] = b'Q';
    m[1..9].copy_from_slice(b"RECOVERY");
    m[9..17].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in m.iter_mut().enumerate().skip(17) {
        *b = b'a' + ((seq as usize + i) % 26) as u8;
    }
    m
}

/// Bytes free for unprivileged use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let c =
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: an all-zero statvfs is a valid value for the out parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path, `st` a live out parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// `sync`, then drops clean pages from the page cache (root only).
fn drop_page_cache() -> Result<(), String> {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "1").map_err(|e| format!("vm.drop_caches: {e}"))
}

/// One timed open: what the daemon reports at start.
fn reopen(dir: &Path) -> Result<(Duration, OpenReport, u64), String> {
    check_interrupted()?;
    let opened = store::open(dir, config(), Some(session()), session(), unix_ns())
        .map_err(|e| format!("{e:#}"))?;
    Ok((opened.took, opened.report, opened.journal.head()))
}

struct Case {
    name: String,
    cache: &'static str,
    times: Vec<Duration>,
    report: OpenReport,
    head: u64,
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// Times `REPEAT` opens, warm (one untimed open first) or cold (page cache dropped before each);
/// `before` runs before each timed open (and before the warming one).
fn measure(
    dir: &Path,
    name: &str,
    cold: bool,
    before: &mut dyn FnMut() -> Result<(), String>,
) -> Result<Case, String> {
    if !cold {
        before()?;
        reopen(dir)?;
    }
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..REPEAT {
        before()?;
        if cold {
            drop_page_cache()?;
        }
        let (took, report, head) = reopen(dir)?;
        eprintln!(
            "journal_recovery: {name}, {}: {} ms ({} segments, {} messages, {} discarded)",
            if cold { "cold" } else { "warm" },
            ms(took),
            report.segments,
            report.messages,
            report.discarded
        );
        times.push(took);
        last = Some((report, head));
    }
    let (report, head) = last.expect("REPEAT > 0");
    Ok(Case {
        name: name.into(),
        cache: if cold { "dropped" } else { "warm" },
        times,
        report,
        head,
    })
}

fn run(dir: &Path, gb: f64) -> Result<(), String> {
    let layout = Layout::for_data(SEGMENT_BYTES);
    let record = (SIZE + RECORD_OVERHEAD) as u64;
    let per_segment =
        (u64::from(layout.data_capacity) / record).min(u64::from(layout.index_capacity));
    let segments = ((gb * 1e9) / (per_segment * SIZE as u64) as f64)
        .ceil()
        .max(2.0) as u64;
    let n = segments * per_segment;
    // One more segment is started by the last part (an append past the full newest one).
    let disk = (segments + 1) * layout.file_len() as u64;
    let parent = dir.parent().ok_or("the directory needs a parent")?;
    fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let free = free_bytes(parent)?;
    let margin = 2 << 30;
    if free < disk + margin {
        return Err(format!(
            "{} has {:.1} GB free; the journal needs {:.1} GB and 2 GiB are kept free (lower the size: journal_recovery DIR GB, or HERZ_JOURNAL_RECOVERY_GB with cargo xtask bench journal-recovery)",
            parent.display(),
            free as f64 / 1e9,
            disk as f64 / 1e9
        ));
    }
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    eprintln!(
        "journal_recovery: writing {n} messages of {SIZE} B ({:.2} GB of messages) in {segments} segments of {} MiB of records ({:.2} GB of files) into {}",
        n as f64 * SIZE as f64 / 1e9,
        SEGMENT_BYTES >> 20,
        disk as f64 / 1e9 - layout.file_len() as f64 / 1e9,
        dir.display()
    );

    // Write.
    let started = Instant::now();
    {
        let mut opened = store::open(dir, config(), Some(session()), session(), unix_ns())
            .map_err(|e| format!("{e:#}"))?;
        for seq in 1..=n {
            let got = opened
                .journal
                .append(&message(seq))
                .map_err(|e| e.to_string())?;
            debug_assert_eq!(got, seq);
            if seq % (1 << 22) == 0 {
                check_interrupted()?;
            }
        }
        assert_eq!(opened.journal.head(), n + 1);
    }
    let write = started.elapsed();
    let synced = Instant::now();
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let sync = synced.elapsed();
    eprintln!(
        "journal_recovery: written in {:.1} s ({:.2} M msgs/s), then sync {:.1} s",
        write.as_secs_f64(),
        n as f64 / write.as_secs_f64() / 1e6,
        sync.as_secs_f64()
    );

    let mut cases = Vec::new();
    let mut nothing = || Ok(());
    // Clean: as a stopped daemon leaves it, the newest segment full (the worst case: it is scanned
    // in full, every record's CRC checked).
    let clean = "clean, newest segment full";
    cases.push(measure(dir, clean, false, &mut nothing)?);
    if root {
        cases.push(measure(dir, clean, true, &mut nothing)?);
    }

    // Crash mid-append: the newest segment's last record is torn (its tail never reached the
    // file) while its index entry was written. Recovery drops it and clears the entry, so it is
    // torn again before each open.
    let newest = dir.join(format!("{:020}.hzj", (segments - 1) * per_segment + 1));
    let entry_at = (HEADER_LEN as u64) + 4 * (per_segment - 1);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&newest)
        .map_err(|e| format!("{}: {e}", newest.display()))?;
    let mut entry = [0u8; 4];
    file.read_at(&mut entry, entry_at)
        .map_err(|e| format!("reading the last index entry: {e}"))?;
    let end = u64::from(u32::from_le_bytes(entry));
    if end == 0 {
        return Err("the newest segment's last index entry is 0".into());
    }
    let tail_at = layout.data_start() as u64 + end - TEAR;
    let mut tear = || -> Result<(), String> {
        file.write_at(&[0u8; TEAR as usize], tail_at)
            .and_then(|_| file.write_at(&entry, entry_at))
            .map(|_| ())
            .map_err(|e| format!("tearing the last record: {e}"))
    };
    let torn = "crash mid-append (last record torn)";
    cases.push(measure(dir, torn, false, &mut tear)?);
    if root {
        cases.push(measure(dir, torn, true, &mut tear)?);
    }
    drop(file);

    // One more message after the repaired one: the full segment is sealed, the next one holds
    // one message.
    {
        let mut opened = store::open(dir, config(), Some(session()), session(), unix_ns())
            .map_err(|e| format!("{e:#}"))?;
        while opened.journal.head() <= n + 1 {
            let seq = opened.journal.head();
            opened
                .journal
                .append(&message(seq))
                .map_err(|e| e.to_string())?;
        }
    }
    let small = "clean, newest segment 1 message";
    cases.push(measure(dir, small, false, &mut nothing)?);
    if root {
        cases.push(measure(dir, small, true, &mut nothing)?);
    }

    let files: u64 = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "hzj"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    println!(
        "Journal of {n} messages of {SIZE} B ({:.2} GB of messages, {:.2} GB of segment files, segments of {} MiB of records); written in {:.1} s ({:.2} M msgs/s), `sync` after it {:.1} s. Reopen times: `took` of herz_user::store::open (what `journal recovered` logs as took_ms), median of {REPEAT} (min–max).\n",
        n as f64 * SIZE as f64 / 1e9,
        files as f64 / 1e9,
        SEGMENT_BYTES >> 20,
        write.as_secs_f64(),
        n as f64 / write.as_secs_f64() / 1e6,
        sync.as_secs_f64(),
    );
    println!(
        "| case | page cache | segments | messages kept | torn appends discarded | reopen ms (median) | min–max ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for c in &cases {
        let min = c.times.iter().min().copied().unwrap_or_default();
        let max = c.times.iter().max().copied().unwrap_or_default();
        println!(
            "| {} | {} | {} | {} | {} | {} | {}–{} |",
            c.name,
            c.cache,
            c.report.segments,
            c.report.messages,
            c.report.discarded,
            ms(median(&c.times)),
            ms(min),
            ms(max)
        );
        let _ = c.head;
    }
    if !root {
        println!("\nNot root: the cold-cache cases (vm.drop_caches) were skipped.");
    }
    // What each case must have found.
    for c in &cases {
        let (want_kept, want_discarded) = if c.name == torn {
            (n - 1, 1)
        } else if c.name == small {
            (n + 1, 0)
        } else {
            (n, 0)
        };
        if c.report.messages != want_kept || c.report.discarded != want_discarded {
            return Err(format!(
                "{}: recovered {} messages, {} discarded; expected {want_kept} and {want_discarded}",
                c.name, c.report.messages, c.report.discarded
            ));
        }
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: journal_recovery DIR [GB]");
        std::process::exit(2);
    };
    let gb: f64 = match args.next().map(|s| s.parse()) {
        None => 10.0,
        Some(Ok(gb)) if gb > 0.0 => gb,
        Some(_) => {
            eprintln!("journal_recovery: GB must be a positive number");
            std::process::exit(2);
        }
    };
    let handler: extern "C" fn(libc::c_int) = on_signal;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    if dir.exists() {
        eprintln!(
            "journal_recovery: removing {} left by an earlier run",
            dir.display()
        );
        if let Err(e) = fs::remove_dir_all(&dir) {
            eprintln!("journal_recovery: {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
    let result = {
        let _cleanup = Cleanup(dir.clone());
        run(&dir, gb)
    };
    if let Err(e) = result {
        eprintln!("journal_recovery: {e}");
        std::process::exit(1);
    }
}
