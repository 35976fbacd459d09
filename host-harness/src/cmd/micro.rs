//! `edgehil micro`: an ONNX model to a micro-model, with its flash and RAM bytes.

use anyhow::{Context, Result};

use edgehil::units::human_bytes;
use edgehil_onnx::micro::compile_file;

use crate::cli::MicroArgs;

pub fn micro(args: MicroArgs) -> Result<u8> {
    let compiled = compile_file(&args.model).with_context(|| format!("compiling {}", args.model.display()))?;
    super::write(&args.out, &compiled.bytes)?;
    let r = &compiled.report;
    outln!(
        "{} → {}: {} ops ({} int8 and {} f32 weight tensors)",
        args.model.display(),
        args.out.display(),
        r.ops,
        r.int8_tensors,
        r.f32_tensors
    );
    outln!("flash {} ({} B; weights {} B)", human_bytes(r.flash_bytes as f64), r.flash_bytes, r.weight_bytes);
    outln!(
        "RAM   {} ({} B activation arena; largest live set {} B)",
        human_bytes(r.arena_bytes as f64),
        r.arena_bytes,
        r.peak_live_bytes
    );
    if let Some(path) = &args.json {
        super::write(path, serde_json::to_string_pretty(r).context("encoding the report")?)?;
    }
    Ok(0)
}
