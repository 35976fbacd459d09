//! A board farm on labgrid, brought up on 127.0.0.1 by each test: labgrid's
//! coordinator and exporter (labgrid 26.0.1 in its own venv), each exported
//! `RawSerialPort` served over RFC 2217 by Debian's ser2net, each port the
//! pty of a board: an agent behind a null modem, or a pty with nothing on
//! the far end. Skipped, with the reason, where labgrid or ser2net is not
//! installed (scripts/test.sh installs both).

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgehil::report::Status;
use edgehil_hil::{Rfc2217Link, Session, Timeouts};
use serialport::{SerialPort, TTYPort};

use crate::common::{self, fixture, scratch_dir, NullModem};
use crate::suite::{edgehil_cmd, journal, text, write_suite};

/// labgrid's bin folder ($EDGEHIL_LABGRID_VENV, else target/labgrid-venv), or why the farm cannot run.
fn labgrid_bin() -> Result<PathBuf, String> {
    let venv = std::env::var_os("EDGEHIL_LABGRID_VENV")
        .map_or_else(|| common::bin_dir().parent().unwrap().join("labgrid-venv"), PathBuf::from);
    let bin = venv.join("bin");
    if !bin.join("labgrid-coordinator").is_file() {
        return Err(format!(
            "no labgrid in {0} (`python3 -m venv {0} && {0}/bin/pip install labgrid==26.0.1`)",
            venv.display()
        ));
    }
    if !["/usr/sbin/ser2net", "/usr/bin/ser2net"].iter().any(|p| Path::new(p).is_file()) {
        return Err("no ser2net (`apt-get install ser2net`)".into());
    }
    Ok(bin)
}

/// A pty an exporter serves: a board's agent, or nothing answering (both
/// ends held open, so the exporter's ser2net sees a port that never answers).
enum Board {
    Agent(NullModem),
    Silent { _master: TTYPort, slave: TTYPort },
}

impl Board {
    fn port(&self) -> PathBuf {
        match self {
            Board::Agent(modem) => modem.host_end.clone(),
            Board::Silent { slave, .. } => PathBuf::from(slave.name().unwrap()),
        }
    }
}

struct Farm {
    bin: PathBuf,
    dir: PathBuf,
    /// HOST:PORT of the coordinator.
    coordinator: String,
    /// The exporter, then the coordinator, each leading its own process group.
    daemons: Vec<Child>,
    _boards: Vec<Board>,
    /// From nothing to every place created and matched.
    setup: Duration,
}

impl Farm {
    /// A coordinator, an exporter with one `RawSerialPort` group per board
    /// and a place per group matching it (`true`: an agent answers there).
    /// `None`, with the reason printed, where labgrid or ser2net is missing.
    fn start(name: &str, places: &[(&str, bool)]) -> Option<Self> {
        let bin = match labgrid_bin() {
            Ok(bin) => bin,
            Err(reason) => {
                eprintln!("skipped: {reason}");
                return None;
            }
        };
        let clock = Instant::now();
        let dir = scratch_dir(name);
        let boards: Vec<Board> = places
            .iter()
            .map(|&(_, agent)| match agent {
                true => Board::Agent(NullModem::start("6979321856")),
                false => {
                    let (master, slave) = TTYPort::pair().unwrap();
                    Board::Silent { _master: master, slave }
                }
            })
            .collect();
        let exporter_yaml = dir.join("exporter.yaml");
        let groups: String = places
            .iter()
            .zip(&boards)
            .map(|((place, _), board)| {
                format!("{place}:\n  RawSerialPort:\n    port: {}\n    speed: 115200\n", board.port().display())
            })
            .collect();
        std::fs::write(&exporter_yaml, groups).unwrap();
        // A port of our own for the coordinator, so that two runs do not meet.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let coordinator = format!("127.0.0.1:{port}");
        let mut farm = Farm { bin, dir, coordinator, daemons: Vec::new(), _boards: boards, setup: Duration::ZERO };
        // The coordinator keeps its places in its working folder.
        let listen = farm.coordinator.clone();
        farm.daemon("coordinator", "labgrid-coordinator", &["-l", &listen]);
        farm.wait_for("the coordinator to listen", || TcpStream::connect(&listen).is_ok());
        let exporter = format!("edgehil-test-{}-{name}", std::process::id());
        farm.daemon(
            "exporter",
            "labgrid-exporter",
            &["-c", &listen, "-n", &exporter, "--hostname", "127.0.0.1", exporter_yaml.to_str().unwrap()],
        );
        farm.wait_for("the exporter's resources", || {
            let listed = String::from_utf8_lossy(&farm.client(&["resources"]).stdout).into_owned();
            places.iter().all(|(place, _)| listed.contains(&format!("{exporter}/{place}/")))
        });
        for &(place, _) in places {
            for args in [vec!["-p", place, "create"], vec!["-p", place, "add-match", &format!("{exporter}/{place}/*")]]
            {
                let o = farm.client(&args);
                assert!(o.status.success(), "labgrid-client {args:?}: {}", text(&o));
            }
        }
        farm.setup = clock.elapsed();
        Some(farm)
    }

    /// Starts a labgrid daemon in its own process group, logging beside the farm.
    fn daemon(&mut self, name: &str, program: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; a test process that dies takes the farm with it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        self.daemons.insert(0, cmd.spawn().unwrap());
    }

    fn wait_for(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let clock = Instant::now();
        while !ready() {
            if clock.elapsed() > Duration::from_secs(60) {
                let logs: Vec<String> = ["coordinator", "exporter"]
                    .iter()
                    .map(|d| std::fs::read_to_string(self.dir.join(format!("{d}.log"))).unwrap_or_default())
                    .collect();
                panic!("no {what} within 60 s; logs:\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn client_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join("labgrid-client"));
        cmd.args(["-x", &self.coordinator]).args(args);
        cmd
    }

    fn client(&self, args: &[&str]) -> Output {
        self.client_cmd(args).output().unwrap()
    }

    /// labgrid-client as another user of the farm.
    fn client_as(&self, user: &str, args: &[&str]) -> Output {
        self.client_cmd(args).env("LG_USERNAME", user).output().unwrap()
    }

    /// edgehil with labgrid's client on PATH and this farm's coordinator.
    fn edgehil(&self, args: &[&str]) -> Output {
        let path = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        edgehil_cmd(args).env("PATH", path).env("LG_COORDINATOR", &self.coordinator).output().unwrap()
    }

    fn released(&self, place: &str) -> bool {
        String::from_utf8_lossy(&self.client(&["-p", place, "show"]).stdout).contains("acquired: None")
    }

    /// Ends the daemons (ser2net with its exporter); how long it took.
    fn stop(&mut self) -> Duration {
        let clock = Instant::now();
        for mut daemon in self.daemons.drain(..) {
            let group = -(daemon.id() as i32);
            // SAFETY: each daemon leads its own process group: this signals it and its children only.
            unsafe { libc::kill(group, libc::SIGTERM) };
            let asked = Instant::now();
            while daemon.try_wait().unwrap().is_none() && asked.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: as above; whatever of the group is left (ser2net included) is killed.
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = daemon.wait();
        }
        clock.elapsed()
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn report_of(path: &Path) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(path).unwrap()).unwrap()[0].clone()
}

/// A suite of the block fixture's `[[run]]` on the farm's `places`.
fn block_suite(farm: &Farm, name: &str, timeout_s: u32, places: &[&str], runs: u32) -> PathBuf {
    let targets: Vec<String> = places.iter().map(|p| format!("\"labgrid:{p}\"")).collect();
    let body = format!(
        "name = \"{name}\"\ntimeout = \"{timeout_s} s\"\nprofiles = [\"jetson-orin-nano\"]\ntargets = [{}]\n\
         [[model]]\nname = \"block\"\npath = \"@REPO/onnx-models/fixtures/block.onnx\"\n\
         [[run]]\nruns = {runs}\nwarmup = 0\n",
        targets.join(", ")
    );
    write_suite(&farm.dir, &body)
}

/// Hello round trips on a fresh session over `link`: the median.
fn median_hello(link: Box<dyn edgehil_hil::Link>) -> Duration {
    let mut session = Session::new(link, Timeouts::default());
    let mut took: Vec<Duration> = (0..21)
        .map(|_| {
            let clock = Instant::now();
            session.hello().unwrap();
            clock.elapsed()
        })
        .collect();
    session.shutdown().unwrap();
    took.sort();
    took[took.len() / 2]
}

#[test]
fn run_on_a_labgrid_place_acquires_runs_and_releases_it_and_a_held_place_names_its_holder() {
    let Some(mut farm) = Farm::start("labgrid-run", &[("bench-1", true)]) else { return };
    let block = fixture("block.onnx");
    let run = |target: &str, json: &Path| {
        let clock = Instant::now();
        let args = ["run", "--model", block.to_str().unwrap(), "--target", target, "--runs", "5"];
        let o = farm.edgehil(&[&args[..], &["--json", json.to_str().unwrap()][..]].concat());
        (o, clock.elapsed())
    };
    let on_farm = farm.dir.join("farm.json");
    let (o, farm_took) = run("labgrid:bench-1", &on_farm);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report = report_of(&on_farm);
    assert_eq!(report["status"], "ok", "{report:#}");
    assert_eq!(report["target"], "labgrid:bench-1");
    assert_eq!(report["latency_ms"]["runs"], 5);
    assert!(report["accuracy"][0]["cosine"].as_f64().unwrap() > 0.9999, "{report:#}");
    assert_eq!(report["link"]["bad_frames_host"], 0, "{report:#}");
    assert!(farm.released("bench-1"), "the run released its place");

    let emulated = farm.dir.join("emu.json");
    let (o, emu_took) = run("emu", &emulated);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report_of(&emulated)["accuracy"], report["accuracy"], "the same agent at both ends");

    // Someone else's place: the run fails at once, naming the place and its holder.
    let o = farm.client_as("alice", &["-p", "bench-1", "acquire"]);
    assert!(o.status.success(), "{}", text(&o));
    let (o, _) = run("labgrid:bench-1", &farm.dir.join("held.json"));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("labgrid place bench-1 is acquired by ") && text(&o).contains("/alice"), "{}", text(&o));
    assert!(farm.client_as("alice", &["-p", "bench-1", "release"]).status.success());

    // Round trips through ser2net against the emulated board's pty.
    assert!(farm.client(&["-p", "bench-1", "acquire"]).status.success());
    let env = String::from_utf8_lossy(&farm.client(&["-p", "bench-1", "env"]).stdout).into_owned();
    let port = env.lines().find_map(|l| l.trim().strip_prefix("port: ")?.parse().ok()).expect("a port in env");
    let rfc2217 = median_hello(Box::new(Rfc2217Link::open("127.0.0.1", port, 115_200).unwrap()));
    assert!(farm.client(&["-p", "bench-1", "release"]).status.success());
    let direct = median_hello(Box::new(common::emulated_board()));
    let teardown = farm.stop();
    eprintln!(
        "labgrid farm: setup {:.1?}, teardown {teardown:.1?}; hello round trip {rfc2217:.2?} over RFC 2217, \
         {direct:.2?} on the emulated board; `edgehil run` {farm_took:.1?} on the place, {emu_took:.1?} emulated",
        farm.setup
    );
}

#[test]
fn a_suite_runs_two_places_at_once_and_skips_the_cases_of_a_board_that_fails_its_health_check() {
    let places = [("bench-1", true), ("bench-2", true), ("bench-dead", false)];
    let Some(farm) = Farm::start("labgrid-suite", &places) else { return };
    let suite = block_suite(&farm, "farm", 120, &["bench-1", "bench-2", "bench-dead"], 3);
    let out = farm.dir.join("out");
    let o = farm.edgehil(&["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap(), "--jobs", "2"]);
    assert_eq!(o.status.code(), Some(4), "an unhealthy board fails the night: {}", text(&o));
    assert!(text(&o).contains("board labgrid:bench-dead failed its health check"), "{}", text(&o));

    let records = journal(&out);
    assert_eq!(records.len(), 3, "{records:#?}");
    let by_place = |place: &str| records.iter().find(|r| r.case.target.to_string() == format!("labgrid:{place}"));
    let (one, two, dead) =
        (by_place("bench-1").unwrap(), by_place("bench-2").unwrap(), by_place("bench-dead").unwrap());
    assert_eq!((one.status, two.status), (Status::Ok, Status::Ok), "{records:#?}");
    assert_eq!(dead.status, Status::Skipped);
    let reason = dead.reason.as_deref().unwrap_or_default();
    assert!(
        reason.starts_with("board labgrid:bench-dead failed its health check: board did not answer hello"),
        "{reason}"
    );
    let overlap = |a: &edgehil::suite::record::Record, b: &edgehil::suite::record::Record| {
        a.started_unix_s < b.started_unix_s + b.duration_s && b.started_unix_s < a.started_unix_s + a.duration_s
    };
    assert!(overlap(one, two), "the two places ran at once: {one:#?} {two:#?}");

    // The reports list the cases in the suite's order, whichever finished first.
    let report: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let targets: Vec<&str> = report.iter().map(|r| r["case"]["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["labgrid:bench-1", "labgrid:bench-2", "labgrid:bench-dead"]);
    for (place, _) in places {
        assert!(farm.released(place), "{place} released");
    }

    // A case killed at its timeout released nothing itself: the suite releases its place.
    let slow = block_suite(&farm, "slow", 4, &["bench-1"], 1_000_000);
    let out = farm.dir.join("slow");
    let o = farm.edgehil(&["suite", "run", slow.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let reason = journal(&out)[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("timed out after 4 s") && reason.ends_with("labgrid place bench-1 released"), "{reason}");
    assert!(farm.released("bench-1"));
}
