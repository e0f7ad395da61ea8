//! The CLI as a user runs it: real processes, real files, the exit codes and messages they see.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::timed;

fn cairn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env_remove("CAIRN_HOME")
        .output()
        .expect("cairn runs")
}

fn ok(args: &[&str]) -> String {
    let o = cairn(args);
    assert!(
        o.status.success(),
        "cairn {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = cairn(args);
    assert!(!o.status.success(), "cairn {args:?} should fail");
    String::from_utf8(o.stderr).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keys_are_private_secret_only_on_request_and_solana_importable() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let addr = ok(&["keys", "--dir", d, "new", "alice"]).trim().to_string();
    assert!(
        addr.parse::<cairn_primitives::Address>().is_ok(),
        "{addr} is an address"
    );
    let mode = std::fs::metadata(dir.path().join("alice.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let shown = ok(&["keys", "--dir", d, "show", "alice"]);
    assert_eq!(
        shown.trim(),
        addr,
        "show prints the address and nothing secret"
    );
    let secret = ok(&["keys", "--dir", d, "show", "alice", "--secret"]);
    assert!(
        secret.contains('['),
        "the secret appears only with --secret"
    );
    assert!(fails(&["keys", "--dir", d, "new", "alice"]).contains("exists already"));
    assert!(fails(&["keys", "--dir", d, "show", "nobody"]).contains("cairn keys new"));

    // A Solana keypair file imports to the same address.
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("id.json");
    std::fs::write(&file, std::fs::read(dir.path().join("alice.json")).unwrap()).unwrap();
    let imported = ok(&["keys", "--dir", d, "import", "bob", "--file", s(&file)]);
    assert_eq!(imported.trim(), addr);
    // A file whose public half does not match its secret is refused.
    let mut nums: Vec<u8> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    nums[40] ^= 1;
    std::fs::write(&file, serde_json::to_string(&nums).unwrap()).unwrap();
    assert!(
        fails(&["keys", "--dir", d, "import", "carol", "--file", s(&file)])
            .contains("does not match")
    );
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["keys", "--dir", d, "list", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[test]
fn genesis_is_written_documented_checked_and_bad_fields_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("genesis.toml");
    let f = s(&file);
    ok(&[
        "genesis",
        "--out",
        f,
        "--fund",
        "5HpHagT65TZzG1PH3CSu63k8DbpvD8s5ip4nEB3kEsrR=1000",
    ]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("# Epoch length."),
        "every field is documented"
    );
    assert!(ok(&["genesis", "--check", f]).contains("is valid"));
    assert!(fails(&["genesis", "--out", f]).contains("--force"));
    let bad = text.replace("decay_per_epoch = \"0.", "decay_per_epoch = \"1.");
    std::fs::write(&file, bad).unwrap();
    assert!(fails(&["genesis", "--check", f]).contains("emission.decay_per_epoch"));
    assert!(fails(&["genesis", "--fund", "notanaddress=1", "--out", "-"]).contains("--fund"));
}

#[test]
fn ledger_generate_replay_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let out = ok(&["ledger", "generate", d, "--blocks", "3", "--txs", "20"]);
    assert_eq!(out.lines().count(), 3);
    assert!(out.lines().last().unwrap().starts_with("committed 3 "));
    let root = out
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap()
        .to_string();
    let replay: serde_json::Value =
        serde_json::from_str(&ok(&["ledger", "replay", d, "--json"])).unwrap();
    assert_eq!(replay["blocks"], 3);
    assert_eq!(replay["txs"], 60);
    assert_eq!(replay["state_root"], root);
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["ledger", "status", d, "--json"])).unwrap();
    assert_eq!(status["height"], 3);
    let empty = tempfile::tempdir().unwrap();
    assert!(fails(&["ledger", "replay", s(empty.path())]).contains("holds no chain"));
}

#[test]
fn bench_ledger_prints_figures_beside_bars_as_json() {
    let _turn = timed();
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "bench",
        "ledger",
        "--json",
        "--txs",
        "2000",
        "--block-txs",
        "500",
        "--devices",
        "2000",
        "--matches",
        "50",
    ]))
    .unwrap();
    for key in [
        "apply_commit_tx_per_s",
        "ed25519_batch_verify_per_s_one_core",
        "match_p99_ms",
        "epoch_payout_s",
    ] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key} missing: {v}");
    }
    assert_eq!(v["epoch_payout_devices"], 2000);
}

#[test]
fn worker_probe_runs_the_challenge_on_this_machine_and_reports_each_class() {
    let _turn = timed();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["worker", "probe", "--json"])).expect("probe json");
    assert_eq!(v["verdict"], "pass", "{v}");
    assert_eq!(v["claimed_class"], "CPU");
    assert!(v["int8_ops_per_sec"].as_f64().unwrap() > 1e9, "{v}");
    assert!(v["kernel_peak_ops_per_sec"].as_f64().unwrap() > 1e9, "{v}");
    let (secs, deadline) = (
        v["compute_secs"].as_f64().expect("compute_secs"),
        v["compute_deadline_secs"]
            .as_f64()
            .expect("compute_deadline_secs"),
    );
    assert!(secs <= deadline, "{v}");
    let gpu = &v["gpu"];
    assert!(
        gpu["unavailable"].as_str().is_some_and(|g| !g.is_empty())
            || gpu["int8_ops_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "measures the GPU or says why not: {gpu}"
    );
    let classes = v["classes"].as_array().expect("classes");
    assert_eq!(classes.len(), 12, "every catalog class");
    let pass = |name: &str| {
        classes.iter().find(|c| c["class"] == name).expect(name)["meets_deadline"] == true
    };
    assert!(pass("CPU"), "{v}");
    assert!(!pass("H100-SXM"), "a CPU does not pass for an H100: {v}");
}

#[test]
fn bench_popw_reports_the_solver_and_both_audits_beside_the_bar() {
    let _turn = timed();
    // The smallest GPU class keeps the test short: 7 tables of 16,384², rows opened in each.
    let v: serde_json::Value = serde_json::from_str(&ok(&[
        "bench", "popw", "--json", "--runs", "1", "--class", "RTX-3050",
    ]))
    .expect("bench json");
    let cpu = &v["cpu_solver"];
    assert!(cpu["int8_ops_per_sec"].as_f64().unwrap() > 1e9, "{v}");
    assert!(
        cpu["kernel_peak_ops_per_sec"].as_f64().unwrap() > 1e9,
        "{v}"
    );
    let audits = v["audits"].as_array().expect("audits");
    assert_eq!(audits.len(), 2);
    assert_eq!(audits[1]["answer"], "RTX-3050");
    assert_eq!(audits[1]["n"], 16_384);
    for a in audits {
        assert!(a["rows_opened"].as_u64().unwrap() >= 32, "{a}");
        assert!(a["one_core_ms_median"].as_f64().unwrap() > 0.0, "{a}");
        assert_eq!(a["bar_ms"], 50.0);
    }
    let gpu = &v["gpu"];
    assert!(
        gpu["unavailable"].as_str().is_some_and(|g| !g.is_empty())
            || gpu["int8_ops_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "measures the GPU or says why not: {gpu}"
    );
    // A class that is not a GPU's is refused, saying so.
    let err = fails(&["bench", "popw", "--class", "CPU"]);
    assert!(err.contains("not a GPU class"), "{err}");
}
