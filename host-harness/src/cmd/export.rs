//! `edgehil export`: a Hugging Face folder or a GGUF file to an ONNX model folder, with a progress bar.

use anyhow::{Context, Result};

use edgehil::units::human_bytes;
use edgehil_onnx::export::{export as run_export, ExportOptions};

use crate::cli::ExportArgs;

pub fn export(args: ExportArgs) -> Result<u8> {
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message("export");
    let mut progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let opts = ExportOptions {
        quant: args.quant,
        block: args.block,
        prune: args.prune,
        lora: args.lora,
        ort_int8_activations: args.ort_int8_activations,
        progress: Some(&mut progress),
        force: args.force,
        part: Default::default(),
    };
    let result = run_export(&args.hf_dir, &args.out, opts);
    bar.finish_and_clear();
    let m = result.with_context(|| format!("exporting {}", args.hf_dir.display()))?;
    outln!(
        "{} ({} parameters) → {}: {} of weights, {:?}{}{}, in {:.1} s",
        m.architecture.name(),
        m.parameters_exported,
        args.out.display(),
        human_bytes(m.weight_bytes as f64),
        m.quantization.scheme,
        m.pruning.as_ref().map(|p| format!(", pruned {} ({})", p.method, p.effect)).unwrap_or_default(),
        m.lora
            .as_ref()
            .map(|l| format!(", LoRA r={} merged into {} modules", l.rank, l.modules_merged))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
}
