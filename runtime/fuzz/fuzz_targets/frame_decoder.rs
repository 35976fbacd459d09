//! Arbitrary bytes into the frame decoder, as both sides decode them: it must
//! never panic, and whatever decodes must encode back to a frame that decodes.
#![no_main]

use edgehil_wire::{encode_frame, FrameDecoder, Request, ToHost};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut requests = FrameDecoder::new();
    requests.feed::<Request>(data, |r| {
        if let Ok(msg) = r {
            if let Ok(frame) = encode_frame(&msg) {
                FrameDecoder::new().feed::<Request>(&frame, |back| assert!(back.is_ok()));
            }
        }
    });
    let mut events = FrameDecoder::new();
    events.feed::<ToHost>(data, |r| {
        if let Ok(msg) = r {
            if let Ok(frame) = encode_frame(&msg) {
                FrameDecoder::new().feed::<ToHost>(&frame, |back| assert!(back.is_ok()));
            }
        }
    });
});
