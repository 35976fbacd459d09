//! The `edgehil` command as a user runs it.

mod common;

use std::process::{Command, Output};

use common::*;

fn edgehil(args: &[&str]) -> Output {
    Command::new(binary("edgehil")).args(args).env("EDGEHIL_AGENT", binary("edgehil-agent")).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn the_main_job_runs_on_defaults() {
    let o = edgehil(&[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("block.onnx on jetson-orin-nano (emu, tract, opt all)"), "{out}");
    for line in
        ["status     fits", "latency    min", "predicted  ", "memory     peak heap", "accuracy   output", "link       "]
    {
        assert!(out.contains(line), "no `{line}` in\n{out}");
    }
}

#[test]
fn a_board_too_small_exits_3_and_the_next_board_still_runs() {
    let dir = scratch_dir("cli-oom");
    let json = dir.join("reports.json");
    let block = fixture("block.onnx");
    let o = edgehil(&[
        "run",
        "--model",
        block.to_str().unwrap(),
        "--profile",
        "nrf52840-dk",
        "--profile",
        "raspberry-pi-5",
        "--runs",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    assert!(out.contains("does not fit: needed >= ") && out.contains("cap 200.0 KiB (heap cap)"), "{out}");
    let reports: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(reports[0]["profile"], "nrf52840-dk");
    assert_eq!(reports[0]["status"], "does_not_fit");
    assert_eq!(reports[1]["profile"], "raspberry-pi-5");
    assert_eq!(reports[1]["status"], "ok");
    assert_eq!(reports[1]["latency_ms"]["runs"], 3);
}

#[test]
fn profiles_list() {
    let o = edgehil(&["profiles", "list"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!(text(&o).0);
}

#[test]
fn profiles_show_gives_every_figure_with_its_source() {
    let (out, _) = text(&edgehil(&["profiles", "show", "galaxy-s24-ultra"]));
    for field in ["cores", "clock", "ram_total", "ram_usable", "peak_fp32", "peak_int8", "bandwidth", "call_overhead"] {
        assert!(out.contains(&format!("\n{field}")), "no {field} in\n{out}");
    }
    assert_eq!(out.matches("source: ").count(), 8, "{out}");
    let (_, err) = text(&edgehil(&["profiles", "show", "pixel-9"]));
    assert!(err.contains("no device profile named `pixel-9`; known: esp32-s3-psram,"), "{err}");
}

/// Writes a team profile: the Jetson's with one line changed.
fn team_profile(name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let dir = scratch_dir(&format!("profiles-{name}"));
    let jetson = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles/jetson-orin-nano.toml"),
    )
    .unwrap();
    let text = edit(jetson.replace("name = \"jetson-orin-nano\"", &format!("name = \"{name}\"")));
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    dir
}

#[test]
fn a_teams_profiles_dir_adds_boards() {
    let dir = team_profile("lab-orin", |t| t);
    let (out, _) = text(&edgehil(&["--profiles-dir", dir.to_str().unwrap(), "profiles", "list"]));
    assert!(out.lines().any(|l| l.starts_with("lab-orin ")), "{out}");
}

#[test]
fn bad_profiles_are_errors_naming_file_and_field() {
    let cases: [(&str, fn(String) -> String, &[&str]); 4] = [
        (
            "typo",
            |t| t.replace("bandwidth =", "bandwith ="),
            &["typo.toml", "unknown field `bandwith`", "expected one of"],
        ),
        (
            "unit",
            |t| t.replace("\"68 GB/s\"", "\"68 GB\""),
            &["unit.toml", "bandwidth", "unit `GB` in `68 GB` is not a unit of bandwidth: expected one of MB/s, GB/s"],
        ),
        (
            "usable",
            |t| t.replace("\"6.5 GiB\"", "\"9 GiB\""),
            &["usable.toml", "field `ram_usable`", "is more than ram_total"],
        ),
        (
            "nosource",
            |t| t.replace(", source = \"estimate\", reasoning = \"fixed", ", reasoning = \"fixed"),
            &["nosource.toml", "missing field `source`"],
        ),
    ];
    for (name, edit, wanted) in cases {
        let dir = team_profile(name, edit);
        let o = edgehil(&["--profiles-dir", dir.to_str().unwrap(), "profiles", "list"]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        for w in wanted {
            assert!(err.contains(w), "{name}: no `{w}` in\n{err}");
        }
    }
}

#[test]
fn a_serial_port_that_is_not_there_fails_the_run_clearly() {
    let (out, _) = text(&edgehil(&["run", "--target", "serial:/dev/ttyEDGEHIL-none@115200", "--runs", "1"]));
    assert!(out.contains("status     failed") && out.contains("cannot open serial port /dev/ttyEDGEHIL-none"), "{out}");
    let o = edgehil(&["run", "--target", "usb0"]);
    assert!(text(&o).1.contains("bad target `usb0`"), "{:?}", text(&o));
}

#[test]
fn models_list_with_fit_on_a_profile() {
    let o = edgehil(&["models", "list", "--profile", "jetson-orin-nano", "--context", "1024"]);
    assert_eq!(o.status.code(), Some(0));
    insta::assert_snapshot!(text(&o).0);
}

#[test]
fn plan_shows_choice_reasons_and_fit() {
    let o = edgehil(&["plan", "--profile", "jetson-orin-nano", "--task", "generation", "--difficulty", "medium"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    insta::assert_snapshot!(text(&o).0);
    let o = edgehil(&["plan", "--profile", "nrf52840-dk", "--task", "classification"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("no catalog model fits nrf52840-dk's 200.0 KiB usable RAM"), "{:?}", text(&o));
}
