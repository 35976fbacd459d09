//! Each command with the event that answers it, as types.
//!
//! A host sends a [`Call`] and gets its [`Call::Answer`] back, or the event
//! that came instead: one generic exchange rather than a match per command.
//! The structs build the [`Command`] the wire carries, so the bytes are the
//! enum's; only the pairing with the answer is added here.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::{
    AgentStats, BoardInfo, Command, EngineKind, Event, GenParams, GenReport, InferReport, LoadReport, OptLevel,
    OutputMode, TensorChunk,
};

/// A command and the terminal event that answers it.
pub trait Call {
    /// What the answer's terminal event carries.
    type Answer;
    /// The command's name in messages ("load", "set-input", …).
    const NAME: &'static str;
    fn into_command(self) -> Command;
    /// The answer in `event`, or `event` back if it answers something else.
    fn answer(event: Event) -> Result<Self::Answer, Box<Event>>;
}

/// What the board's retrieval index holds after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexState {
    pub items: u32,
    /// Items × dimensions × 4.
    pub bytes: u64,
    pub peak_heap: u64,
}

/// Where an uploaded file is on the board and how many of its bytes the board holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub path: String,
    pub have: u64,
}

/// Implements [`Call`] for a struct whose fields are those of the command
/// variant of the same name.
macro_rules! call {
    ($(#[$doc:meta])* $name:ident $text:literal { $($field:ident: $ty:ty),* } -> $answer:ty,
     |$event:ident| $pattern:pat => $value:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name { $(pub $field: $ty),* }

        impl Call for $name {
            type Answer = $answer;
            const NAME: &'static str = $text;
            fn into_command(self) -> Command {
                let $name { $($field),* } = self;
                Command::$name { $($field),* }
            }
            fn answer($event: Event) -> Result<$answer, Box<Event>> {
                match $event {
                    $pattern => Ok($value),
                    other => Err(Box::new(other)),
                }
            }
        }
    };
}

call!(Hello "hello" { protocol_version: u16 } -> BoardInfo, |e| Event::HelloAck(info) => info);
call!(Load "load" { path: String, engine: EngineKind, opt_level: OptLevel, threads: u16 } -> LoadReport,
    |e| Event::Loaded(report) => report);
call!(
    /// One chunk of input `index`.
    SetInput "set-input" { index: u16, chunk: TensorChunk } -> (), |e| Event::Done => ()
);
call!(
    /// Answered after `Run` and `Output` events, which the session hands on as they come.
    Infer "infer" { runs: u32, warmup: u32, outputs: OutputMode } -> InferReport,
    |e| Event::InferDone(report) => report
);
call!(SetPrompt "set-prompt" { offset: u32, ids: Vec<u32> } -> (), |e| Event::Done => ());
call!(SetPromptText "set-prompt-text" { text: String } -> Vec<u32>, |e| Event::Tokens { ids } => ids);
call!(Detokenize "detokenize" { ids: Vec<u32> } -> String, |e| Event::Text(text) => text);
call!(LoadEmbedder "load-embedder" { path: String, engine: EngineKind, threads: u16 } -> IndexState,
    |e| Event::Indexed { items, bytes, peak_heap } => IndexState { items, bytes, peak_heap });
call!(IndexAdd "index-add" { ids: Vec<u32> } -> IndexState,
    |e| Event::Indexed { items, bytes, peak_heap } => IndexState { items, bytes, peak_heap });
call!(
    /// Item numbers and scores, best first.
    Retrieve "retrieve" { ids: Vec<u32>, k: u16 } -> (Vec<u32>, Vec<f32>),
    |e| Event::Retrieved { items, scores } => (items, scores)
);
call!(Upload "upload" { folder: [u8; 32], name: String, size: u64, sha256: [u8; 32] } -> FileState,
    |e| Event::Stored { path, have } => FileState { path, have });
call!(UploadChunk "upload-chunk" { offset: u64, bytes: Vec<u8> } -> FileState,
    |e| Event::Stored { path, have } => FileState { path, have });

// Commands without fields are unit variants, which `Command::Stats {}` also builds.
call!(IndexClear "index-clear" {} -> IndexState,
    |e| Event::Indexed { items, bytes, peak_heap } => IndexState { items, bytes, peak_heap });
call!(Stats "stats" {} -> AgentStats, |e| Event::Stats(stats) => stats);
call!(Shutdown "shutdown" {} -> (), |e| Event::Done => ());

/// Generation parameters; answered after a `Token` event per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generate(pub GenParams);

impl Call for Generate {
    type Answer = GenReport;
    const NAME: &'static str = "generate";
    fn into_command(self) -> Command {
        Command::Generate(self.0)
    }
    fn answer(event: Event) -> Result<GenReport, Box<Event>> {
        match event {
            Event::GenerateDone(report) => Ok(report),
            other => Err(Box::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_builds_its_command_and_takes_only_its_answer() {
        let call = Detokenize { ids: alloc::vec![300] };
        assert_eq!(call.into_command(), Command::Detokenize { ids: alloc::vec![300] });
        assert_eq!(Detokenize::answer(Event::Text("hi".into())), Ok("hi".into()));
        assert_eq!(Detokenize::answer(Event::Done), Err(Box::new(Event::Done)));
        assert_eq!(Shutdown::answer(Event::Done), Ok(()));
        assert!(Shutdown::answer(Event::Text("x".into())).is_err());
    }
}
