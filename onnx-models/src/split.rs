//! Cloud/device split graphs (SPA's `layer` mode): a decoder cut after its
//! first K layers. The board's part takes the token ids and gives the
//! hidden state after layer K; the cloud's takes that hidden state and runs
//! the remaining layers and the head. Each part keeps the key/value cache of
//! its own layers, so one token crosses the cut once: M = 1 exchange.

use std::path::Path;

use crate::export::{export, ExportError, ExportOptions, Manifest};
use crate::hf::HfModel;

/// The name of the hidden state crossing the cut, `[batch, sequence, hidden]` fp32.
pub const HIDDEN: &str = "hidden_states";

/// Which part of a decoder a graph holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Part {
    /// The whole model: token ids → logits.
    #[default]
    Whole,
    /// Embeddings and the first K layers: token ids → [`HIDDEN`].
    Board(u64),
    /// Layers K… and the head: [`HIDDEN`] → logits.
    Cloud(u64),
}

impl Part {
    /// The layers of a model of `layers` layers this part runs.
    pub fn layers(self, layers: u64) -> std::ops::Range<u64> {
        match self {
            Part::Whole => 0..layers,
            Part::Board(k) => 0..k,
            Part::Cloud(k) => k..layers,
        }
    }

    /// The part starts from token ids (else from [`HIDDEN`]).
    pub fn embeds(self) -> bool {
        !matches!(self, Part::Cloud(_))
    }

    /// The part ends with the head's logits (else with [`HIDDEN`]).
    pub fn has_head(self) -> bool {
        !matches!(self, Part::Board(_))
    }
}

/// Exports `part` of `source` (a Hugging Face decoder folder) into `dir`,
/// fp32. A cut must leave at least one layer on each side: K = 0 or K = L
/// are the whole model, all in the cloud or all on the board.
pub fn export_part(source: &Path, dir: &Path, part: Part) -> Result<Manifest, ExportError> {
    let config = HfModel::open(source)?.config;
    if part != Part::Whole && !config.arch.is_decoder() {
        return Err(ExportError::Unsupported(format!(
            "{}: a split needs a decoder; {} is an encoder",
            source.display(),
            config.arch.name()
        )));
    }
    if let Part::Board(k) | Part::Cloud(k) = part {
        if k == 0 || k >= config.layers {
            return Err(ExportError::Option(format!(
                "--layers-on-board {k}: {} has {} layers, so K must be 1..={} (all on the board or all in the cloud are --mode board / cloud)",
                source.display(),
                config.layers,
                config.layers.saturating_sub(1)
            )));
        }
    }
    export(source, dir, ExportOptions { part, ..ExportOptions::default() })
}
