//! The nftables peer: a ruleset of the same intent as the shield's policy, applied and removed in
//! the victim's namespace, and its drop counter.

use super::*;

/// The nftables ruleset of the same intent as the shield's policy: per-source SYN rate (a meter),
/// a global SYN limit, and synproxy answering SYNs with cookies before conntrack or the listener
/// see them. Applied in the victim's namespace only.
pub(super) fn nft_ruleset(ports: &[u16], p: &Policy) -> String {
    let ports = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"table inet herzbench {{
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        tcp dport {{ {ports} }} tcp flags & (fin|syn|rst|ack) == syn meter herz_syn_src size 65535 {{ ip saddr limit rate over {rate}/second burst {burst} packets }} counter drop
        tcp dport {{ {ports} }} tcp flags & (fin|syn|rst|ack) == syn limit rate over {grate}/second burst {gburst} packets counter drop
        tcp dport {{ {ports} }} tcp flags & (fin|syn|rst|ack) == syn notrack
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        tcp dport {{ {ports} }} ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
        tcp dport {{ {ports} }} ct state invalid counter drop
    }}
}}
"#,
        rate = p.syn_rate,
        burst = p.syn_burst,
        grate = p.global_syn_rate,
        gburst = p.global_syn_burst,
    )
}

pub(super) fn nft_apply(ruleset: &str) -> anyhow::Result<()> {
    topo::ns_exec(
        topo::NS_VICTIM,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
    )?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", topo::NS_VICTIM, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(ruleset.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f: {}\nruleset:\n{ruleset}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(super) fn nft_remove() {
    let _ = topo::ns_exec(
        topo::NS_VICTIM,
        &["nft", "delete", "table", "inet", "herzbench"],
    );
}

/// Packets counted by the ruleset's drop rules.
pub(super) fn nft_drops() -> anyhow::Result<u64> {
    let j: serde_json::Value = serde_json::from_str(&topo::ns_exec(
        topo::NS_VICTIM,
        &["nft", "-j", "list", "table", "inet", "herzbench"],
    )?)?;
    let mut total = 0;
    for item in j["nftables"].as_array().into_iter().flatten() {
        for e in item["rule"]["expr"].as_array().into_iter().flatten() {
            if let Some(c) = e.get("counter") {
                total += c["packets"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

// --- Detection -----------------------------------------------------------------------------------
