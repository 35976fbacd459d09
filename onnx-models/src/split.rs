//! Cloud/device split graphs (SPA's `layer` mode): a decoder cut after its
//! first K layers. The board's part takes the token ids and gives the
//! hidden state after layer K; the cloud's takes that hidden state and runs
//! the remaining layers and the head. Each part keeps the key/value cache of
//! its own layers, so one token crosses the cut once: M = 1 exchange.

use std::path::Path;

use crate::export::{export, ExportError, ExportOptions, Manifest};
use crate::hf::HfModel;

/// The name of the hidden state a part takes, `[batch, sequence, hidden]` fp32.
pub const HIDDEN: &str = "hidden_states";
/// The name of the hidden state a part gives (a name of its own: a graph
/// that takes one and gives one cannot use one name for both).
pub const HIDDEN_OUT: &str = "last_hidden_state";
/// Ladder side tuning's exchange: every layer's hidden state, downsampled to
/// width d/r, side by side, `[batch, sequence, layers · d/r]` fp32.
pub const LADDER: &str = "ladder_states";
/// The ladder as the cloud gives it.
pub const LADDER_OUT: &str = "ladder_states_out";

/// Which part of a decoder a graph holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Part {
    /// The whole model: token ids → logits.
    #[default]
    Whole,
    /// Embeddings and the first K layers: token ids → [`HIDDEN_OUT`].
    Board(u64),
    /// Layers K… and the head: [`HIDDEN`] → logits.
    Cloud(u64),
    /// Adapter mode's unsplit graph: the model with an adapter of this rank after every layer.
    AdapterWhole { rank: u64 },
    /// Adapter mode's cloud step: one frozen layer (after the embeddings for layer 0), [`HIDDEN_OUT`] out.
    AdapterCloud { layer: u64 },
    /// Adapter mode's board step: the layer's adapter, `h + B·A·h` (then the head after the last layer).
    AdapterBoard { layer: u64, rank: u64 },
    /// Ladder side tuning's unsplit graph: the frozen model tapped after every
    /// layer, its taps (width d/`reduction`) feeding a side network and its own head.
    LstWhole { reduction: u64 },
    /// Ladder side tuning's cloud part: the frozen model, giving [`LADDER_OUT`].
    LstCloud { reduction: u64 },
    /// Ladder side tuning's board part: the side network over [`LADDER`], to logits.
    LstBoard { reduction: u64 },
}

/// What a part starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Token ids, through the embeddings.
    Ids,
    /// [`HIDDEN`].
    Hidden,
    /// [`LADDER`].
    Ladder,
}

/// What a part ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The model's head: logits.
    Head,
    /// [`HIDDEN_OUT`].
    Hidden,
    /// [`LADDER_OUT`].
    Ladder,
    /// The side network and its head: logits.
    Side,
}

/// What a graph runs, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// A frozen decoder layer, with its key/value cache.
    Layer(u64),
    /// The adapter after a layer: `h + B·A·h`, A `[rank, hidden]` and B `[hidden, rank]`.
    Adapter(u64),
    /// The ladder's tap after a layer: its hidden state downsampled to d/r.
    Tap(u64),
}

impl Part {
    /// What this part of a model of `layers` layers runs, in order.
    pub fn pieces(self, layers: u64) -> Vec<Piece> {
        match self {
            Part::Whole => (0..layers).map(Piece::Layer).collect(),
            Part::Board(k) => (0..k).map(Piece::Layer).collect(),
            Part::Cloud(k) => (k..layers).map(Piece::Layer).collect(),
            Part::AdapterWhole { .. } => (0..layers).flat_map(|l| [Piece::Layer(l), Piece::Adapter(l)]).collect(),
            Part::AdapterCloud { layer } => vec![Piece::Layer(layer)],
            Part::AdapterBoard { layer, .. } => vec![Piece::Adapter(layer)],
            Part::LstWhole { .. } | Part::LstCloud { .. } => {
                (0..layers).flat_map(|l| [Piece::Layer(l), Piece::Tap(l)]).collect()
            }
            Part::LstBoard { .. } => Vec::new(),
        }
    }

    pub fn start(self) -> Start {
        match self {
            Part::Whole
            | Part::Board(_)
            | Part::AdapterWhole { .. }
            | Part::LstWhole { .. }
            | Part::LstCloud { .. } => Start::Ids,
            Part::AdapterCloud { layer: 0 } => Start::Ids,
            Part::Cloud(_) | Part::AdapterCloud { .. } | Part::AdapterBoard { .. } => Start::Hidden,
            Part::LstBoard { .. } => Start::Ladder,
        }
    }

    /// The part starts from token ids.
    pub fn embeds(self) -> bool {
        self.start() == Start::Ids
    }

    /// What the part of a model of `layers` layers ends with.
    pub fn end(self, layers: u64) -> End {
        match self {
            Part::Whole | Part::Cloud(_) | Part::AdapterWhole { .. } => End::Head,
            Part::AdapterBoard { layer, .. } if layer + 1 == layers => End::Head,
            Part::Board(_) | Part::AdapterCloud { .. } | Part::AdapterBoard { .. } => End::Hidden,
            Part::LstCloud { .. } => End::Ladder,
            Part::LstWhole { .. } | Part::LstBoard { .. } => End::Side,
        }
    }

    /// The side network's width divisor, for ladder side tuning's parts.
    pub fn reduction(self) -> Option<u64> {
        match self {
            Part::LstWhole { reduction } | Part::LstCloud { reduction } | Part::LstBoard { reduction } => {
                Some(reduction)
            }
            _ => None,
        }
    }

    /// The adapters' rank, for parts that have adapters.
    pub fn rank(self) -> Option<u64> {
        match self {
            Part::AdapterWhole { rank } | Part::AdapterBoard { rank, .. } => Some(rank),
            _ => None,
        }
    }
}

/// The seed of layer `l`'s adapter weights: the same in the unsplit graph and the board's step.
pub fn adapter_seed(l: u64) -> u64 {
    0xADA9_7E00 + l
}

/// The seed of ladder side tuning's weights of layer `l` (its tap and side
/// block); the side head's is `lst_seed(layers)`.
pub fn lst_seed(l: u64) -> u64 {
    0x1AD_DE00 + l
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
    if let Part::AdapterCloud { layer } | Part::AdapterBoard { layer, .. } = part {
        if layer >= config.layers {
            return Err(ExportError::Option(format!(
                "adapter of layer {layer}: {} has {} layers",
                source.display(),
                config.layers
            )));
        }
    }
    if let Some(rank) = part.rank().filter(|r| *r == 0 || *r > config.hidden) {
        return Err(ExportError::Option(format!(
            "--rank {rank}: an adapter's rank must be 1..={} (the hidden size of {})",
            config.hidden,
            source.display()
        )));
    }
    if let Some(r) = part.reduction().filter(|r| *r == 0 || config.hidden % r != 0) {
        return Err(ExportError::Option(format!(
            "--reduction {r}: the side network's width is hidden / r, and {}'s hidden size {} is not a multiple of it",
            source.display(),
            config.hidden
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
