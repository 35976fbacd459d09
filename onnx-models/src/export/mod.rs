//! Hugging Face folder or GGUF file → edgehil model folder: `model.onnx` (standard ops,
//! opset 17), `model.onnx.data` (weights, page-aligned), `tokenizer.json` and
//! the manifest `edgehil.json`.
//!
//! The export never holds the whole model: tensors are read one at a time
//! through the memory map (their pages released after use), converted, and
//! appended to the data file. Everything is written into a temporary folder
//! beside the destination and renamed at the end, so a failed export leaves
//! nothing half-written.

pub(crate) mod decoder;
pub mod emit;
pub mod lora;
pub(crate) mod prune;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::arch::{Graph, ModelFamily};
use crate::gguf::model::GgufModel;
use crate::gguf::GgufError;
use crate::graph::{write_model, OnnxError};
use crate::hf::{Config, HfError, HfModel};
use crate::split::Part;
use emit::{Emitter, Lin, Mat, Packed4};
pub use prune::Prune;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// the Hugging Face folder is not usable
    #[error(transparent)]
    Hf(#[from] HfError),
    /// the GPTQ checkpoint is not one export imports
    #[error(transparent)]
    Gptq(#[from] crate::gptq::GptqError),
    /// the GGUF file is not usable
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// a file could not be read or written
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// the LoRA adapter is not usable
    #[error("{path}: {message}")]
    Adapter { path: PathBuf, message: String },
    /// the combination of model and options cannot be exported for both engines
    #[error("cannot export: {0}")]
    Unsupported(String),
    /// an option's value is malformed
    #[error("{0}")]
    Option(String),
    /// the destination is not one export may replace
    #[error("{path}: {message}")]
    Destination { path: PathBuf, message: String },
    /// a size of the model does not fit in 64 bits
    #[error("{0}")]
    Overflow(String),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
}

impl ExportError {
    pub(crate) fn io(path: &Path, cause: std::io::Error) -> Self {
        ExportError::Io { path: path.into(), cause }
    }
}

/// Weight precision of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quant {
    /// fp32 weights.
    None,
    /// Per-output-channel symmetric int8: `DequantizeLinear(axis=1) → MatMul`.
    Int8,
    /// Symmetric 4-bit blocks: `com.microsoft::MatMulNBits`.
    Int4,
}

impl FromStr for Quant {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" | "fp32" => Ok(Quant::None),
            "int8" => Ok(Quant::Int8),
            "int4" => Ok(Quant::Int4),
            other => Err(ExportError::Option(format!("--quant `{other}`: expected none, int8 or int4"))),
        }
    }
}

pub struct ExportOptions<'a> {
    pub quant: Quant,
    /// Block size of int4.
    pub block: usize,
    pub prune: Option<Prune>,
    pub lora: Option<PathBuf>,
    /// int4 only: let ONNX Runtime quantize MatMulNBits activations to int8
    /// (`accuracy_level` 4, as ONNX Runtime GenAI's CPU int4 models do):
    /// about twice as fast on CPUs, but on x86 it keeps each weight block's
    /// scale three times (the file's, a packed copy, a block sum), about 1.3×
    /// the RAM of the weights for TinyLlama, and its logits differ from
    /// tract's by up to ~0.1. By default activations stay fp32
    /// (`accuracy_level` 0, the default of ONNX Runtime's own quantizer).
    pub ort_int8_activations: bool,
    /// Called with (bytes of source weights read, total) as the export goes.
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Replace the destination even when it is a non-empty folder (or a
    /// file) that is not an earlier export. Never the source folder, the
    /// adapter's, or a folder that contains either.
    pub force: bool,
    /// The part of a decoder to write: the whole model, or one side of a cloud/device split.
    pub part: Part,
}

impl Default for ExportOptions<'_> {
    fn default() -> Self {
        Self {
            quant: Quant::None,
            block: 32,
            prune: None,
            lora: None,
            ort_int8_activations: false,
            progress: None,
            force: false,
            part: Part::Whole,
        }
    }
}

/// A tensor of the model's interface, as the manifest lists it.
#[derive(Debug, Clone, Serialize)]
pub struct IoSpec {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceFile {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuantSummary {
    pub scheme: Quant,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<usize>,
    /// What each engine makes of it.
    pub engines: String,
    /// How the checkpoint was quantized already (GPTQ), and what export kept of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

/// `edgehil.json`: what the folder holds and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub format: u32,
    pub producer: String,
    pub architecture: ModelFamily,
    pub config: Config,
    /// Parameters of the source model.
    pub parameters: u64,
    /// Parameters written (smaller after structured pruning).
    pub parameters_exported: u64,
    /// Bytes of weights in model.onnx and model.onnx.data.
    pub weight_bytes: u64,
    pub quantization: QuantSummary,
    pub pruning: Option<prune::PruneSummary>,
    pub lora: Option<lora::LoraSummary>,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// Key/value heads of each layer's cache (decoders), after pruning.
    pub kv_heads: Vec<u64>,
    pub head_dim: u64,
    pub tokenizer: Option<String>,
    /// The end-of-sequence token, when the source names it (GGUF metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    /// The Jinja chat template, when the source has one (GGUF metadata).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    pub sources: Vec<SourceFile>,
}

pub const MANIFEST: &str = "edgehil.json";

/// What export reads: a Hugging Face folder or a GGUF file.
pub(crate) trait Weights {
    fn config(&self) -> &Config;
    /// A tensor by its Hugging Face name, as fp32.
    fn read_f32(&self, name: &str) -> Result<Vec<f32>, ExportError>;
    /// Writes the tokenizer files into `dir`; returns what the manifest says of the source.
    fn write_files(&self, dir: &Path) -> Result<SourceSummary, ExportError>;
    /// Linear layer `module`'s weight as the checkpoint holds it in 4 bits, if it does.
    fn packed(&self, _module: &str) -> Result<Option<Packed4>, ExportError> {
        Ok(None)
    }
    /// How the checkpoint itself is quantized, for the manifest.
    fn checkpoint_quantization(&self) -> Option<String> {
        None
    }
}

/// The manifest's fields that come from the source besides its weights.
#[derive(Default)]
pub(crate) struct SourceSummary {
    sources: Vec<SourceFile>,
    tokenizer: Option<String>,
    eos_token_id: Option<u32>,
    chat_template: Option<String>,
}

impl Weights for HfModel {
    fn config(&self) -> &Config {
        &self.config
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, ExportError> {
        Ok(HfModel::read_f32(self, name)?)
    }

    fn write_files(&self, dir: &Path) -> Result<SourceSummary, ExportError> {
        let mut sources = vec![sha256(&self.dir.join("config.json"))?];
        for file in self.weight_files() {
            sources.push(sha256(file)?);
        }
        let tokenizer_src = self.dir.join("tokenizer.json");
        let tokenizer = if tokenizer_src.exists() {
            for extra in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
                let from = self.dir.join(extra);
                if from.exists() {
                    std::fs::copy(&from, dir.join(extra)).map_err(|e| ExportError::io(&from, e))?;
                }
            }
            sources.push(sha256(&tokenizer_src)?);
            Some("tokenizer.json".to_string())
        } else {
            None
        };
        Ok(SourceSummary { sources, tokenizer, ..SourceSummary::default() })
    }
}

impl Weights for GgufModel {
    fn config(&self) -> &Config {
        &self.config
    }

    fn read_f32(&self, name: &str) -> Result<Vec<f32>, ExportError> {
        Ok(GgufModel::read_f32(self, name)?)
    }

    fn write_files(&self, dir: &Path) -> Result<SourceSummary, ExportError> {
        let t = crate::gguf::tokenizer::tokenizer_files(&self.file)?;
        for (name, json) in [("tokenizer.json", &t.tokenizer), ("tokenizer_config.json", &t.config)] {
            let path = dir.join(name);
            let text = serde_json::to_string(json).expect("json");
            std::fs::write(&path, text).map_err(|e| ExportError::io(&path, e))?;
        }
        Ok(SourceSummary {
            sources: vec![sha256(self.file.path())?],
            tokenizer: Some("tokenizer.json".into()),
            eos_token_id: t.eos,
            chat_template: t.chat_template,
        })
    }
}

/// Reads the weights the builders ask for: LoRA merged, progress counted.
pub(crate) struct Source<'a, 'p> {
    pub model: &'a dyn Weights,
    adapter: Option<lora::Adapter>,
    done: u64,
    total: u64,
    progress: Option<&'a mut (dyn FnMut(u64, u64) + 'p)>,
    /// Every tensor read, with the shape it was read as: the tests hold it against the tensors synth writes.
    #[cfg(test)]
    read: Vec<(String, Vec<u64>)>,
}

impl Source<'_, '_> {
    pub fn config(&self) -> &Config {
        self.model.config()
    }

    pub fn vector(&mut self, name: &str) -> Result<Vec<f32>, ExportError> {
        let v = self.read(name)?;
        #[cfg(test)]
        self.read.push((name.into(), vec![v.len() as u64]));
        Ok(v)
    }

    /// A matrix stored `[rows, cols]` (embeddings, `Linear` weights).
    pub fn mat(&mut self, name: &str, rows: u64, cols: u64) -> Result<Mat, ExportError> {
        let v = self.read(name)?;
        #[cfg(test)]
        self.read.push((name.into(), vec![rows, cols]));
        Ok(Mat::new(rows as usize, cols as usize, v))
    }

    fn read(&mut self, name: &str) -> Result<Vec<f32>, ExportError> {
        let v = self.model.read_f32(name)?;
        self.advance(v.len());
        Ok(v)
    }

    /// Counts `values` more of the source as read (progress is in fp32 bytes).
    fn advance(&mut self, values: usize) {
        self.done += values as u64 * 4;
        if let Some(p) = self.progress.as_mut() {
            p(self.done, self.total);
        }
    }

    /// A linear layer `{module}.weight` (+ `.bias`), `[out, in]` with the adapter merged.
    /// GPT-2's `Conv1D` stores its weight `[in, out]`: `conv1d` turns it. A
    /// weight the checkpoint holds in 4 bits (GPTQ, always `[out, in]`) comes packed.
    pub fn linear(&mut self, module: &str, out: u64, inp: u64, bias: bool, conv1d: bool) -> Result<Lin, ExportError> {
        let name = format!("{module}.weight");
        let packed = self.model.packed(module)?;
        let w = match &packed {
            Some(p) => {
                #[cfg(test)]
                self.read.push((name, vec![out, inp]));
                self.advance(p.n * p.k);
                p.dequantize()
            }
            None => {
                let mut w = if conv1d { self.mat(&name, inp, out)?.transposed() } else { self.mat(&name, out, inp)? };
                if let Some(a) = self.adapter.as_mut() {
                    a.merge(&name, &mut w)?;
                }
                w
            }
        };
        let b = if bias { Some(self.vector(&format!("{module}.bias"))?) } else { None };
        Ok(Lin { w, b, packed })
    }
}

fn sha256(path: &Path) -> Result<SourceFile, ExportError> {
    let mut file = std::fs::File::open(path).map_err(|e| ExportError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| ExportError::io(path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(SourceFile { file: path.display().to_string(), bytes, sha256 })
}

/// Checks the option combination before anything is read or written.
fn check_options(config: &Config, opts: &ExportOptions) -> Result<(), ExportError> {
    if opts.quant == Quant::Int4 {
        // tract keeps MatMulNBits as Q4_0 only for block 32; other blocks it expands to fp32.
        if opts.block != 32 {
            return Err(ExportError::Unsupported(format!(
                "int4 with --block {}: tract runs MatMulNBits as 4-bit only with block 32 (it would expand the weights to fp32)",
                opts.block
            )));
        }
        let mut dims = vec![("hidden_size", config.hidden), ("intermediate_size", config.intermediate)];
        dims.extend(config.embed_dim.map(|d| ("word_embed_proj_dim", d)));
        if let Some((field, k)) = dims.iter().find(|(_, k)| k % opts.block as u64 != 0) {
            return Err(ExportError::Unsupported(format!(
                "int4 with block {}: `{field}` = {k} is not a multiple of {}, so its MatMulNBits layers cannot be blocked",
                opts.block, opts.block
            )));
        }
    }
    if opts.ort_int8_activations && opts.quant != Quant::Int4 {
        return Err(ExportError::Unsupported(format!(
            "ONNX Runtime int8 activations are a choice for int4 (MatMulNBits), not for {:?}",
            opts.quant
        )));
    }
    if let Some(p) = &opts.prune {
        p.check(config)?;
    }
    Ok(())
}

/// Checks `out` may be replaced, before anything is read: absent, an empty
/// folder, or an earlier export (it holds [`MANIFEST`]); anything else only
/// with `force`. The source folders, and folders containing them, never.
fn check_destination(out: &Path, sources: &[&Path], force: bool) -> Result<(), ExportError> {
    let refuse = |message: String| Err(ExportError::Destination { path: out.into(), message });
    let meta = match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ExportError::io(out, e)),
        Ok(meta) => meta,
    };
    let resolved = std::fs::canonicalize(out).map_err(|e| ExportError::io(out, e))?;
    for source in sources {
        // A source that cannot be resolved is reported by the reading that follows.
        let Ok(source) = std::fs::canonicalize(source) else { continue };
        if source == resolved {
            return refuse(format!(
                "refusing to replace the source folder {} with the export (--force does not change this); choose another --out",
                source.display()
            ));
        }
        if source.starts_with(&resolved) {
            return refuse(format!(
                "refusing to replace a folder that contains the source folder {} (--force does not change this); choose another --out",
                source.display()
            ));
        }
    }
    if force {
        return Ok(());
    }
    if !meta.is_dir() {
        let what = if meta.file_type().is_symlink() { "a symbolic link" } else { "not a folder" };
        return refuse(format!("is {what}; refusing to replace it (give --force to replace it)"));
    }
    if out.join(MANIFEST).is_file() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(out).map_err(|e| ExportError::io(out, e))?;
    if entries.next().is_some() {
        return refuse(format!(
            "is not empty and holds no {MANIFEST}, so it is not an earlier export; refusing to replace it (give --force to replace it)"
        ));
    }
    Ok(())
}

/// Exports `source` (a Hugging Face folder, or a GGUF file: its tensors
/// dequantized to fp32) into `out`. Returns the manifest. An earlier export or
/// an empty folder at `out` is replaced; any other non-empty `out` only
/// with [`ExportOptions::force`], and never the source folder or a folder
/// containing it.
pub fn export(source: &Path, out: &Path, mut opts: ExportOptions) -> Result<Manifest, ExportError> {
    let mut sources = vec![source];
    sources.extend(opts.lora.as_deref());
    check_destination(out, &sources, opts.force)?;
    let model: Box<dyn Weights> =
        if source.is_file() { Box::new(GgufModel::open(source)?) } else { crate::gptq::open(HfModel::open(source)?)? };
    let model = model.as_ref();
    let config = model.config().clone();
    check_options(&config, &opts)?;
    if model.checkpoint_quantization().is_some() && (opts.prune.is_some() || opts.lora.is_some()) {
        return Err(ExportError::Unsupported(
            "pruning or a LoRA adapter on a GPTQ checkpoint: its layers are 4-bit codes, which would have to be dequantized and quantized again; export the unquantized model instead".into(),
        ));
    }
    let adapter = opts.lora.as_deref().map(lora::Adapter::open).transpose()?;
    if let Some(a) = &adapter {
        if !config.arch.is_decoder() {
            return Err(ExportError::Unsupported("LoRA adapters are merged into decoders only".into()));
        }
        a.check_modules(&config.tensors())?;
    }

    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| ExportError::io(parent, e))?;
    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    let tmp = parent.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| ExportError::io(&tmp, e))?;
    let result = write_folder(model, adapter, &tmp, &mut opts).and_then(|manifest| {
        replace_dir(&tmp, out)?;
        Ok(manifest)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Puts the finished `tmp` at `out`, removing what was there (which
/// [`check_destination`] allowed).
fn replace_dir(tmp: &Path, out: &Path) -> Result<(), ExportError> {
    match std::fs::symlink_metadata(out) {
        Ok(meta) => {
            let old = tmp.with_file_name(format!(
                "{}.old",
                tmp.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            ));
            std::fs::rename(out, &old).map_err(|e| ExportError::io(out, e))?;
            std::fs::rename(tmp, out).map_err(|e| ExportError::io(out, e))?;
            let _ = if meta.is_dir() { std::fs::remove_dir_all(&old) } else { std::fs::remove_file(&old) };
            Ok(())
        }
        Err(_) => std::fs::rename(tmp, out).map_err(|e| ExportError::io(out, e)),
    }
}

/// Elements of every tensor of `config` (× `bytes` each), without wrapping.
fn total_of(config: &Config, bytes: u64) -> Result<u64, ExportError> {
    config.tensors().iter().try_fold(0u64, |total, (name, shape)| {
        crate::hf::elements(shape).and_then(|n| n.checked_mul(bytes)).and_then(|n| total.checked_add(n)).ok_or_else(
            || ExportError::Overflow(format!("tensor `{name}` {shape:?}: the model's size overflows 64 bits")),
        )
    })
}

fn write_folder(
    model: &dyn Weights,
    adapter: Option<lora::Adapter>,
    dir: &Path,
    opts: &mut ExportOptions,
) -> Result<Manifest, ExportError> {
    let config = model.config().clone();
    let total = total_of(&config, 4)?;
    let mut source = Source {
        model,
        adapter,
        done: 0,
        total,
        progress: opts.progress.as_deref_mut(),
        #[cfg(test)]
        read: Vec::new(),
    };
    let accuracy_level = if opts.quant == Quant::Int4 && opts.ort_int8_activations { 4 } else { 0 };
    let mut em = Emitter::new(&format!("edgehil-{}", config.arch.name()), dir, opts.quant, opts.block, accuracy_level)?;
    let (io, kv_heads, pruning) = build(config.arch, &mut source, &mut em, opts.prune.as_ref(), opts.part)?;
    let lora = source.adapter.as_ref().map(lora::Adapter::summary).transpose()?;
    let (proto, written) = em.finish()?;
    write_model(&proto, &dir.join("model.onnx"))?;

    let SourceSummary { mut sources, tokenizer, eos_token_id, chat_template } = model.write_files(dir)?;
    if let Some(a) = opts.lora.as_deref() {
        sources.push(sha256(&a.join("adapter_config.json"))?);
        sources.push(sha256(&a.join("adapter_model.safetensors"))?);
    }
    let parameters = total_of(&config, 1)?;
    let manifest = Manifest {
        format: 1,
        producer: format!("edgehil {}", env!("CARGO_PKG_VERSION")),
        architecture: config.arch,
        head_dim: config.head_dim(),
        config,
        parameters,
        parameters_exported: written.parameters,
        weight_bytes: written.weight_bytes,
        quantization: QuantSummary {
            scheme: opts.quant,
            block: (opts.quant == Quant::Int4).then_some(opts.block),
            engines: match opts.quant {
                Quant::None => "tract and ONNX Runtime: fp32".into(),
                Quant::Int8 => "tract: Q8_1 block-quantized matmul (fp16 scales) with fp32 activations; ONNX Runtime Level1: dequantize then fp32 MatMul; Level2+ fuses it and quantizes activations too".into(),
                Quant::Int4 if opts.ort_int8_activations => "ONNX Runtime: MatMulNBits with int8 activations (accuracy_level 4); tract: Q4_0 block-quantized matmul with fp32 activations".into(),
                Quant::Int4 => "ONNX Runtime: MatMulNBits with fp32 activations (accuracy_level 0); tract: Q4_0 block-quantized matmul".into(),
            },
            checkpoint: model.checkpoint_quantization(),
        },
        pruning: pruning.map(|mut p| {
            p.zeros = written.zeros;
            p
        }),
        lora,
        inputs: io.0,
        outputs: io.1,
        kv_heads,
        tokenizer,
        eos_token_id,
        chat_template,
        sources,
    };
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).expect("manifest serializes");
    std::fs::write(&path, text).map_err(|e| ExportError::io(&path, e))?;
    Ok(manifest)
}

/// The interface of a built graph: (inputs, outputs).
pub(crate) type Io = (Vec<IoSpec>, Vec<IoSpec>);

/// What a graph builder returns: the interface, the heads of each layer's
/// key/value cache (decoders; the attention heads for encoders), and what pruning did.
pub(crate) type Built = (Io, Vec<u64>, Option<prune::PruneSummary>);

/// Builds `family`'s graph from `src` into `em`.
fn build(
    family: ModelFamily,
    src: &mut Source,
    em: &mut Emitter,
    pruning: Option<&Prune>,
    part: Part,
) -> Result<Built, ExportError> {
    match family.arch().graph() {
        Graph::Decoder(layers) => decoder::build(layers, src, em, pruning, part),
        Graph::Encoder(_) if part != Part::Whole => {
            Err(ExportError::Unsupported(format!("{part:?}: only decoders are split")))
        }
        Graph::Encoder(encoder) => encoder(src, em, pruning),
    }
}

/// The tensors `model`'s export reads, each with the shape it reads it as
/// (the graph is written into `scratch`).
#[cfg(test)]
pub(crate) fn tensors_read(model: &dyn Weights, scratch: &Path) -> Result<Vec<(String, Vec<u64>)>, ExportError> {
    std::fs::create_dir_all(scratch).map_err(|e| ExportError::io(scratch, e))?;
    let mut source = Source { model, adapter: None, done: 0, total: 0, progress: None, read: Vec::new() };
    let mut em = Emitter::new("tensors-read", scratch, Quant::None, 32, 0)?;
    build(model.config().arch, &mut source, &mut em, None, Part::Whole)?;
    Ok(source.read)
}

pub(crate) fn spec(name: &str, dtype: &'static str, shape: &[&str]) -> IoSpec {
    IoSpec { name: name.into(), dtype, shape: shape.iter().map(|s| (*s).to_string()).collect() }
}
