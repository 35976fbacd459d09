//! QEMU boards: Debian's kernel in a VM with the profile's RAM, the agent on
//! a UART, models uploaded over it. Skipped, saying why, where QEMU is not
//! installed (scripts/test.sh installs it). TCG is about 30× slower than
//! this machine: small models, few runs.

use std::path::Path;

use crate::common;

use common::{binary, export_to, profile};
use edgehil::generate::{generate, GenerateOptions};
use edgehil::report::Status;
use edgehil::run::{self, BoardOptions};
use edgehil_hil::{QemuArch, Target};
use edgehil_onnx::export::ExportOptions;
use edgehil_runtime::wire::{EngineKind, GenParams};

/// The archs whose QEMU is installed; prints why the others are skipped.
fn installed() -> Vec<QemuArch> {
    QemuArch::ALL
        .into_iter()
        .filter(|arch| {
            let found = std::process::Command::new(arch.program()).arg("--version").output().is_ok();
            if !found {
                eprintln!("skipped qemu:{arch}: {} is not installed (scripts/test.sh installs it)", arch.program());
            }
            found
        })
        .collect()
}

fn qemu_board(arch: QemuArch, engine: EngineKind) -> BoardOptions {
    let target = Target::Qemu { arch };
    let agent = binary("edgehil-agent");
    let image = run::board_image(&target, &agent).unwrap_or_else(|e| panic!("qemu:{arch} image: {e}"));
    BoardOptions { target, qemu_image: image, ..common::board(engine) }
}

/// The console log a report names, which must show the boot and the agent's start.
fn check_console(log: &str) {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("console log {log}: {e}"));
    assert!(text.contains(edgehil_hil::AGENT_STARTED), "{log} shows no agent start:\n{text}");
}

#[test]
fn qemu_boards_run_the_block_with_the_host_accuracy() {
    for arch in installed() {
        let mut opts = common::options("block.onnx", EngineKind::Tract);
        opts.board = qemu_board(arch, EngineKind::Tract);
        opts.runs = 2;
        let r = common::run_on(&opts, "raspberry-pi-5");
        assert_eq!(r.status, Status::Ok, "qemu:{arch}: {:?}", r.error);
        assert_eq!(r.board.as_ref().unwrap().arch, arch.name(), "the agent ran on the VM's CPU");
        for a in &r.accuracy {
            assert!(a.cosine.unwrap() > 0.9999, "qemu:{arch} {}: {a:?} against the x86 host reference", a.output);
        }
        let vm = r.vm.as_ref().expect("a QEMU run reports its VM");
        assert_eq!((vm.ram_bytes, vm.cores), (8 << 30, 4), "raspberry-pi-5's total RAM and cores");
        assert!(vm.boot_ms > 0.0);
        check_console(&vm.console_log);
        let table = r.table();
        assert!(table.contains("emulated-instruction timings (QEMU under TCG), not device latencies"), "{table}");
    }
}

#[test]
fn qemu_boards_generate_the_host_tokens() {
    let archs = installed();
    if archs.is_empty() {
        return;
    }
    let (dir, _) = export_to("llama-gqa", "qemu", ExportOptions::default());
    for arch in archs {
        let opts = GenerateOptions {
            model: dir.clone(),
            reference: None,
            text: None,
            prompt: "the board writes".into(),
            params: GenParams { max_new: 8, temperature: 0.0, ..GenParams::STUDY },
            stop_at_eos: false,
            tokenize_on_board: true,
            reps: 1,
            board: qemu_board(arch, EngineKind::Tract),
        };
        let r = generate(&opts, &profile("raspberry-pi-5"), |_| {}).unwrap();
        assert_eq!(r.status, Status::Ok, "qemu:{arch}: {:?}", r.error);
        let a = r.agreement.as_ref().unwrap();
        assert!(a.same_tokens, "qemu:{arch}: {:?} vs the host's, first difference {:?}", r.tokens, a.first_difference);
        assert_eq!(r.tokens.len(), 8);
        check_console(&r.vm.as_ref().unwrap().console_log);
    }
}

/// A profile of `ram` total RAM, else raspberry-pi-5.
fn small_board(ram: u64) -> edgehil::profile::Profile {
    let mut p = profile("raspberry-pi-5");
    p.name = "qemu-test-small".into();
    p.ram_total.value.0 = ram;
    p.ram_usable.value.0 = ram;
    p
}

#[test]
fn a_model_larger_than_the_vm_is_killed_by_its_kernel() {
    let Some(arch) = installed().into_iter().find(|a| *a == QemuArch::X86_64) else { return };
    let dir = common::scratch_dir("qemu-oom");
    let ram = 256u64 << 20;
    let model = needs_at_run(&dir, 200 << 20);
    let mut opts = common::options("block.onnx", EngineKind::Tract);
    opts.model = model;
    opts.runs = 1;
    opts.warmup = 0;
    // No agent cap: the kernel alone holds the model to the VM's RAM.
    opts.board = BoardOptions { cap: Some(64 << 30), ..qemu_board(arch, EngineKind::Tract) };
    let r = run::run(&opts, &small_board(ram)).unwrap();
    assert_eq!(r.status, Status::DoesNotFit, "{:?}", r.error);
    let error = r.error.as_deref().unwrap();
    assert!(error.starts_with("does not fit (board kernel OOM killer, RAM 256.0 MiB)"), "{error}");
    assert_eq!(r.memory.kernel_oom_ram, Some(ram));
    let log = std::fs::read_to_string(&r.vm.as_ref().unwrap().console_log).unwrap();
    assert!(log.contains("Out of memory: Killed process"), "the guest kernel said so:\n{log}");
    assert!(r.table().contains("does not fit (board kernel OOM killer, RAM 256.0 MiB)"), "{}", r.table());
}

/// A model of a few hundred bytes that needs two tensors of `bytes` each
/// when it runs (`Expand` of its input, then a product of that with itself):
/// the file travels over the slow UART in no time, the memory it needs does not.
fn needs_at_run(dir: &Path, bytes: u64) -> std::path::PathBuf {
    use edgehil_onnx::graph::{Dim, Elem, GraphBuilder};
    let width = 1024i64;
    let rows = (bytes / (4 * width as u64)) as i64;
    let mut g = GraphBuilder::new("needs-at-run");
    let x = g.input("x", Elem::F32, &[Dim::Fixed(1), Dim::Fixed(1)]);
    let shape = g.i64s("shape", &[2], &[rows, width]);
    let wide = g.node("Expand", &[&x, &shape], &[]);
    let squared = g.node("Mul", &[&wide, &wide], &[]);
    g.node_to("ReduceSum", &[&squared], "y", &[]);
    g.output("y", Elem::F32, &[Dim::Fixed(1), Dim::Fixed(1)]);
    let path = dir.join("needs-at-run.onnx");
    edgehil_onnx::graph::write_model(&g.build(), &path).unwrap();
    path
}

#[test]
fn a_vm_that_does_not_boot_in_time_names_its_console() {
    let Some(arch) = installed().into_iter().next() else { return };
    let image = qemu_board(arch, EngineKind::Tract).qemu_image.unwrap();
    let console_log = common::scratch_dir("qemu-boot").join("console.log");
    let config = edgehil_hil::QemuConfig {
        arch,
        kernel: image.kernel(),
        initrd: image.initrd(),
        ram_bytes: 256 << 20,
        cores: 1,
        agent_cap: 0,
        agent_threads: 1,
        console_log: console_log.clone(),
        boot_timeout: std::time::Duration::from_millis(1500),
    };
    let started = std::time::Instant::now();
    let e = edgehil_hil::QemuBoard::boot(&config).err().expect("no agent within 1.5 s under TCG").to_string();
    assert!(started.elapsed().as_secs() < 10, "the boot timeout holds: {:?}", started.elapsed());
    assert!(e.contains(&format!("QEMU board {arch} did not boot within")), "{e}");
    assert!(e.contains(&console_log.display().to_string()), "names its console log: {e}");
}

#[test]
fn a_nightly_suite_on_emu_and_qemu_is_paired_by_compare() {
    if !installed().contains(&QemuArch::Aarch64) {
        return;
    }
    let dir = common::scratch_dir("qemu-suite");
    let suite = dir.join("suite.toml");
    std::fs::write(
        &suite,
        format!(
            "name = \"emu-and-qemu\"\ntimeout = \"300 s\"\nprofiles = [\"raspberry-pi-5\"]\n\
             targets = [\"emu\", \"qemu:aarch64\"]\nengines = [\"tract\"]\n\n\
             [[model]]\nname = \"block\"\npath = \"{}\"\n\n[[run]]\nruns = 2\nwarmup = 1\n",
            common::fixture("block.onnx").display()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let edgehil = |args: &[&str]| std::process::Command::new(binary("edgehil")).args(args).output().unwrap();
    let o = edgehil(&["suite", "run", suite.to_str().unwrap(), "--out", out.to_str().unwrap(), "--jobs", "2"]);
    let said = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    let pairs = dir.join("pairs.json");
    let journal = out.join("journal.jsonl");
    let o = edgehil(&["compare", journal.to_str().unwrap(), "--json", pairs.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", said(&o));
    assert!(
        said(&o).contains("| emu ok | qemu:aarch64 ok | not compared: emulated-instruction timings |"),
        "{}",
        said(&o)
    );
    let pairing: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&pairs).unwrap()).unwrap();
    let pair = &pairing["pairs"][0];
    assert_eq!((pair["a_timing"].as_str(), pair["b_timing"].as_str()), (Some("host"), Some("emulated-instruction")));
    // Fit and accuracy side by side: the board's aarch64 kernels against the x86 host's.
    assert!(pair["accuracy_difference"].as_f64().unwrap().abs() < 1e-4, "{pair:#}");
    assert!(pair["ram_difference"].is_i64(), "{pair:#}");
}

/// A suite whose first case the VM's kernel kills goes on to the next case:
/// the killed case is recorded as not fitting, for the kernel's reason, and
/// the next boots a fresh VM.
#[test]
fn a_suite_goes_on_after_a_case_killed_by_the_vm_kernel() {
    if !installed().contains(&QemuArch::X86_64) {
        return;
    }
    let dir = common::scratch_dir("qemu-suite-oom");
    // All of the VM's RAM usable, so the agent's cap (the usable RAM) lets the
    // model try and the guest kernel, holding its own share, is what stops it.
    let profiles = dir.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let base =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-profiles/raspberry-pi-5.toml"))
            .unwrap();
    let small = base
        .replace("name = \"raspberry-pi-5\"", "name = \"small-vm\"")
        .replace("value = \"8 GiB\"", "value = \"256 MiB\"")
        .replace("value = \"7 GiB\"", "value = \"256 MiB\"");
    std::fs::write(profiles.join("small-vm.toml"), small).unwrap();
    let big = needs_at_run(&dir, 200 << 20);
    let suite = dir.join("suite.toml");
    std::fs::write(
        &suite,
        format!(
            "name = \"kernel-oom\"\ntimeout = \"300 s\"\nprofiles = [\"small-vm\"]\n\
             targets = [\"qemu:x86_64\"]\nengines = [\"tract\"]\n\n\
             [[model]]\nname = \"big\"\npath = \"{}\"\n\n[[model]]\nname = \"block\"\npath = \"{}\"\n\n\
             [[run]]\nruns = 1\nwarmup = 0\n",
            big.display(),
            common::fixture("block.onnx").display()
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let o = std::process::Command::new(binary("edgehil"))
        .args(["--profiles-dir", profiles.to_str().unwrap(), "suite", "run", suite.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let journal = std::fs::read_to_string(out.join("journal.jsonl")).unwrap_or_else(|e| panic!("{e}\n{said}"));
    let records: Vec<serde_json::Value> = journal.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let case = |model: &str| {
        records
            .iter()
            .find(|r| r["case"]["model"] == model)
            .unwrap_or_else(|| panic!("no record of {model}:\n{journal}\n{said}"))
    };
    let (big, block) = (case("big"), case("block"));
    assert_eq!(big["status"], "does_not_fit", "{big:#}");
    assert!(
        big["reason"].as_str().unwrap().starts_with("does not fit (board kernel OOM killer, RAM 256.0 MiB)"),
        "{big:#}"
    );
    assert_eq!(block["status"], "ok", "the suite went on after the VM was killed: {block:#}");
}
