//! Bad input to `herz`: one clear error line naming the problem, exit status 1, nothing started.

use herz_tests::herz;

fn run_with_config(text: &str, verb: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herz.toml");
    std::fs::write(&path, text).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(verb);
    let out = herz(&args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line(stderr: &str, needles: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(lines[0].starts_with("herz: error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` missing from: {stderr}");
    }
}

#[test]
fn unknown_config_key_is_named() {
    let (code, err) = run_with_config("[shield]\nintrefaces = [\"lo\"]\n", &["run"]);
    assert_eq!(code, 1);
    assert_one_line(&err, &["shield.intrefaces", "unknown field"]);
}

#[test]
fn bad_address_is_named() {
    let (code, err) = run_with_config("[subscribers]\nlisten = \"198.18.0.300:7100\"\n", &["run"]);
    assert_eq!(code, 1);
    assert_one_line(&err, &["subscribers.listen"]);
}

#[test]
fn unparsable_toml_is_reported() {
    let (code, err) = run_with_config("[shield\n", &["stats"]);
    assert_eq!(code, 1);
    assert_one_line(&err, &["config"]);
}

#[test]
fn missing_config_file_is_named() {
    let out = herz(&["--config", "/nonexistent/herz.toml", "run"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line(
        &String::from_utf8_lossy(&out.stderr),
        &["/nonexistent/herz.toml"],
    );
}

#[test]
fn stats_without_a_shield_says_so_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("nothing-pinned");
    let state = dir.path().join("state");
    let cfg = format!(
        "[shield]\npin_path = \"{}\"\n[state]\ndir = \"{}\"\n",
        pin.display(),
        state.display()
    );
    let (code, err) = run_with_config(&cfg, &["stats"]);
    assert_eq!(code, 1);
    assert_one_line(&err, &["no shield loaded", "no herz daemon is running"]);
}

/// No built-in logins off loopback: a file that opens a listener to the network without naming its
/// users, or with the demo's well-known ones, does not start.
#[test]
fn default_credentials_off_loopback_are_refused() {
    let (code, err) = run_with_config("[subscribers]\nlisten = \"0.0.0.0:7100\"\n", &["run"]);
    assert_eq!(code, 1);
    assert_one_line(&err, &["subscribers.users", "no built-in users"]);
    let (code, err) = run_with_config(
        "[publishers]\nlisten = \"0.0.0.0:7101\"\n[[publishers.users]]\nname = \"feed\"\npassword = \"feed\"\n",
        &["run"],
    );
    assert_eq!(code, 1);
    assert_one_line(&err, &["publishers.users[0]", "well-known"]);
}
