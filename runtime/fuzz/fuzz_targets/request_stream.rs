//! Bytes as the agent reads them: a stream of frames cut into reads at
//! arbitrary points. It must never panic, and how the stream is cut must not
//! change what decodes (the agent's reads split frames wherever the UART does).
#![no_main]

use edgehil_wire::{FrameDecoder, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, as a UART driver's buffer would.
    let Some((&cut, stream)) = data.split_first() else { return };
    let read = usize::from(cut).max(1);
    let decode = |reads: &mut dyn Iterator<Item = &[u8]>| {
        let mut decoder = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in reads {
            decoder.feed::<Request>(chunk, |r| got.push(r.map_err(|e| e.to_string())));
        }
        got
    };
    let whole = decode(&mut std::iter::once(stream));
    let in_reads = decode(&mut stream.chunks(read));
    assert_eq!(whole, in_reads, "reads of {read} bytes decoded differently");
});
